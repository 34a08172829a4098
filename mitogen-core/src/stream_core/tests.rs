use super::*;
use crate::message::codec;

fn msg(handle: u32, len: usize, fill: u8) -> Message {
    Message::bytes(ContextId(1), Handle(handle), vec![fill; len])
}

/// Takes one round off the queue: (handle, more flag, payload) per frame.
fn round(q: &mut Outbound) -> Vec<(u32, bool, Bytes)> {
    let mut wire: VecDeque<Bytes> = q.next_bytes().clone();
    let n: usize = wire.iter().map(Bytes::len).sum();
    q.advance(n);
    let mut frames = Vec::new();
    while let Some(h) = wire.pop_front() {
        let enc = u16::from_be_bytes([h[0], h[1]]);
        let handle = u32::from_be_bytes([h[14], h[15], h[16], h[17]]);
        let len = u32::from_be_bytes([h[22], h[23], h[24], h[25]]) as usize;
        let data = if len > 0 {
            wire.pop_front().unwrap()
        } else {
            Bytes::new()
        };
        assert_eq!(data.len(), len);
        frames.push((handle, Enc(enc).is_more(), data));
    }
    frames
}

#[test]
fn a_small_message_waits_behind_one_fragment_of_each_bulk_lane() {
    let mut q = Outbound::new(ContextId(0));
    q.queue(msg(1000, 3 * FRAGMENT, 0xaa)).unwrap();
    q.queue(msg(1001, 2 * FRAGMENT, 0xbb)).unwrap();
    q.queue(msg(1002, 10, 0xcc)).unwrap();
    let first = round(&mut q);
    let shape: Vec<_> = first
        .iter()
        .map(|(h, more, d)| (*h, *more, d.len()))
        .collect();
    assert_eq!(
        shape,
        [
            (1000, true, FRAGMENT),
            (1001, true, FRAGMENT),
            (1002, false, 10)
        ]
    );
}

#[test]
fn a_lane_alone_sends_bigger_frames_and_everything_arrives_in_order() {
    let mut q = Outbound::new(ContextId(0));
    let big = msg(1000, 2 * ALONE_MAX + 5, 0xaa);
    q.queue(big.clone()).unwrap();
    q.queue(msg(1000, 7, 0xbb)).unwrap();
    let mut got = Vec::new();
    loop {
        let frames = round(&mut q);
        if frames.is_empty() {
            break;
        }
        for (_, more, d) in frames {
            assert!(d.len() <= ALONE_MAX);
            got.push((more, d));
        }
    }
    let (first, rest) = got.split_at(3);
    let whole: Vec<u8> = first.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    assert_eq!(whole, big.data);
    assert_eq!(
        first.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(rest.len(), 1);
    assert_eq!(&rest[0].1[..], &[0xbb; 7]);
}

/// Everything `out` has queued, as bytes on the wire, at most `max` per
/// write (a socket that takes little at a time).
fn drain(out: &mut Outbound, max: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    loop {
        let mut room = max;
        let mut n = 0;
        for b in out.next_bytes() {
            let take = b.len().min(room);
            wire.extend_from_slice(&b[..take]);
            room -= take;
            n += take;
            if room == 0 {
                break;
            }
        }
        if n == 0 {
            return wire;
        }
        out.advance(n);
    }
}

/// Every message `inb` gives for `wire` fed in chunks of `step`.
fn receive(inb: &mut Inbound, wire: &[u8], step: usize) -> Vec<Message> {
    let mut got = Vec::new();
    for chunk in wire.chunks(step) {
        inb.feed(chunk);
        while let Some(input) = inb.poll(|_| true).unwrap() {
            match input {
                Input::Message(m) => got.push(m),
                Input::TooLarge { head, .. } => panic!("too large: {head:?}"),
            }
        }
    }
    got
}

fn to_me(handle: u32, len: usize, fill: u8) -> Message {
    let mut m = Message::bytes(ContextId(1), Handle(handle), vec![fill; len]);
    m.src_id = ContextId(0);
    m.auth_id = ContextId(0);
    m
}

#[test]
fn split_messages_interleaved_with_small_ones_arrive_whole() {
    let mut out = Outbound::new(ContextId(0));
    let big = to_me(1000, 3 * FRAGMENT + 11, 0xaa);
    let other = to_me(1001, 2 * FRAGMENT, 0xbb);
    out.queue(big.clone()).unwrap();
    out.queue(other.clone()).unwrap();
    out.queue(to_me(1002, 5, 0xcc)).unwrap();
    out.queue(to_me(1002, 6, 0xdd)).unwrap();
    assert_eq!(out.pending(), big.data.len() + other.data.len() + 11);
    let wire = drain(&mut out, 7000);
    assert_eq!(out.pending(), 0);
    let mut inb = Inbound::new(ContextId(1), 1 << 24);
    let got = receive(&mut inb, &wire, 4093);
    let handles: Vec<u32> = got.iter().map(|m| m.handle.0).collect();
    // One fragment of each lane per round: the small ones overtake the
    // split ones, and each lane keeps its order.
    assert_eq!(handles, [1002, 1001, 1002, 1000]);
    assert_eq!(got[3], big);
    assert_eq!(got[1], other);
    assert!(got.iter().all(|m| !m.enc.is_more()));
    assert_eq!(inb.buffered(), 0);
}

#[test]
fn frames_for_another_context_pass_unassembled() {
    let mut out = Outbound::new(ContextId(0));
    out.queue(to_me(1000, 2 * FRAGMENT, 1)).unwrap();
    out.queue(to_me(1001, 2 * FRAGMENT, 2)).unwrap();
    let wire = drain(&mut out, usize::MAX);
    // Context 5 routes between: it forwards fragments as they come.
    let got = receive(&mut Inbound::new(ContextId(5), 1 << 24), &wire, 1 << 20);
    assert_eq!(got.len(), 4);
    assert!(got[0].enc.is_more() && !got[3].enc.is_more());
}

#[test]
fn a_split_message_failing_the_reverse_path_check_is_handed_on_as_is() {
    let mut out = Outbound::new(ContextId(0));
    out.queue(to_me(1000, 2 * FRAGMENT, 1)).unwrap();
    out.queue(to_me(1001, 1, 2)).unwrap();
    let wire = drain(&mut out, usize::MAX);
    let mut inb = Inbound::new(ContextId(1), 1 << 24);
    inb.feed(&wire);
    let mut asked = 0;
    let mut got = Vec::new();
    while let Some(Input::Message(m)) = inb
        .poll(|_| {
            asked += 1;
            false
        })
        .unwrap()
    {
        got.push(m);
    }
    // Both fragments are handed on (for the router to drop), nothing kept:
    // asked once, for the first (the last is then no part of a kept one).
    assert_eq!(got.len(), 3);
    assert_eq!(asked, 1);
    assert!(got[0].enc.is_more());
}

#[test]
fn a_split_message_over_the_limit_is_refused_once_whole() {
    let mut out = Outbound::new(ContextId(0));
    out.queue(to_me(1000, 3 * FRAGMENT, 1)).unwrap();
    out.queue(to_me(1001, 1, 2)).unwrap();
    let wire = drain(&mut out, usize::MAX);
    let mut inb = Inbound::new(ContextId(1), 2 * FRAGMENT);
    inb.feed(&wire);
    let mut seen = Vec::new();
    while let Some(input) = inb.poll(|_| true).unwrap() {
        seen.push(match input {
            Input::Message(m) => (m.handle.0, m.data.len()),
            Input::TooLarge { head, len } => {
                assert!(!head.enc.is_more() && head.data.is_empty());
                (head.handle.0 + 1_000_000, len)
            }
        });
    }
    assert_eq!(seen, [(1001, 1), (1_001_000, 3 * FRAGMENT)]);
}

#[test]
fn garbage_and_too_many_split_messages_close_the_stream() {
    let mut inb = Inbound::new(ContextId(1), 1 << 20);
    inb.feed(&[0xff; 40]);
    assert!(matches!(inb.poll(|_| true), Err(StreamError::Corrupt(_))));

    let mut inb = Inbound::new(ContextId(1), 1 << 20);
    for h in 0..=MAX_PARTIALS as u32 {
        let mut m = to_me(1000 + h, 1, 0);
        m.enc = Enc(Enc::BIN.0 | Enc::MORE.0);
        let mut frame = Vec::new();
        codec::encode(&m, &mut frame);
        inb.feed(&frame);
    }
    assert_eq!(inb.poll(|_| true).unwrap_err(), StreamError::TooManySplit);
}

#[test]
fn a_closed_stream_answers_with_dead_replies_except_for_fragments() {
    let mut out = Outbound::new(ContextId(3));
    out.queue(to_me(1000, 10, 0)).unwrap();
    out.close();
    assert_eq!(out.pending(), 0);
    assert!(out.is_empty());
    let mut m = to_me(1000, 10, 0);
    assert_eq!(out.queue(m.clone()), Err(None), "no reply wanted");
    m.reply_to = Handle(1234);
    let dead = out.queue(m.clone()).unwrap_err().unwrap();
    assert_eq!(
        (dead.dst_id, dead.src_id, dead.handle),
        (ContextId(0), ContextId(3), Handle(1234))
    );
    assert_eq!(dead.dead_reason().as_deref(), Some(msgs::DEAD_NO_ROUTE));
    m.enc = Enc(Enc::BIN.0 | Enc::MORE.0);
    assert_eq!(out.queue(m), Err(None), "fragments get no reply");
}

#[test]
fn senders_wait_over_the_high_water_mark_but_a_lone_small_call_does_not() {
    let mut out = Outbound::new(ContextId(0));
    while !out.is_full() {
        out.queue(to_me(1000, ALONE_MAX, 0)).unwrap();
    }
    assert!(out.must_wait(&to_me(1000, 1, 0)), "same lane as the bulk");
    assert!(
        out.must_wait(&to_me(1001, FRAGMENT + 1, 0)),
        "more than a frame"
    );
    assert!(
        !out.must_wait(&to_me(1001, 10, 0)),
        "a small call elsewhere"
    );
    drain(&mut out, usize::MAX);
    assert!(out.is_clear() && !out.must_wait(&to_me(1000, 1, 0)));
}

#[test]
fn the_rest_of_a_direct_write_goes_first() {
    let mut out = Outbound::new(ContextId(0));
    let m = to_me(1000, 100, 7);
    assert!(out.can_write_direct(&m));
    let header = codec::encode_header(&m);
    out.rest_of_direct(&header, &m, 10);
    assert_eq!(out.pending(), codec::HEADER_LEN + 100 - 10);
    assert!(!out.can_write_direct(&m));
    out.queue(to_me(1001, 3, 1)).unwrap();
    let mut wire = header[..10].to_vec();
    wire.extend(drain(&mut out, 5));
    let got = receive(&mut Inbound::new(ContextId(1), 1 << 20), &wire, 3);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], m);
}
