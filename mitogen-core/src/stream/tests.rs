use super::*;
use crate::ids::Handle;

fn msg(handle: u32, len: usize, fill: u8) -> Message {
    Message::bytes(ContextId(1), Handle(handle), vec![fill; len])
}

/// Takes one round off the queue: (handle, more flag, payload) per frame.
fn round(q: &mut OutQueue) -> Vec<(u32, bool, Bytes)> {
    q.refill();
    let mut frames = Vec::new();
    while let Some(h) = q.wire.pop_front() {
        let enc = u16::from_be_bytes([h[0], h[1]]);
        let handle = u32::from_be_bytes([h[14], h[15], h[16], h[17]]);
        let len = u32::from_be_bytes([h[22], h[23], h[24], h[25]]) as usize;
        let data = if len > 0 {
            q.wire.pop_front().unwrap()
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
    let mut q = OutQueue::default();
    q.push(msg(1000, 3 * FRAGMENT, 0xaa));
    q.push(msg(1001, 2 * FRAGMENT, 0xbb));
    q.push(msg(1002, 10, 0xcc));
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
    let mut q = OutQueue::default();
    let big = msg(1000, 2 * ALONE_MAX + 5, 0xaa);
    q.push(big.clone());
    q.push(msg(1000, 7, 0xbb));
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

/// Whatever the cut, the pending count returns to zero once everything is
/// written, and the bytes on the wire are the payloads plus one header per
/// frame.
#[test]
fn pending_bytes_return_to_zero() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let file = File::from(std::os::fd::OwnedFd::from(a));
    let out = StreamOut::new(
        StreamId(1),
        ContextId(1),
        "t".into(),
        false,
        Arc::new(file),
        Box::new(|| {}),
    );
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        all.len()
    });
    let sizes = [3 * ALONE_MAX + 17, 10, FRAGMENT, 0, ALONE_MAX];
    for (i, n) in sizes.iter().enumerate() {
        out.send(&msg(1000 + (i % 2) as u32, *n, i as u8)).unwrap();
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while !out.flush().unwrap() {
        assert!(Instant::now() < deadline, "never drained");
        std::thread::yield_now();
    }
    assert_eq!(out.pending_bytes(), 0);
    out.close();
    drop(out);
    let wire = reader.join().unwrap();
    let payload: usize = sizes.iter().sum();
    let headers = (wire - payload) / codec::HEADER_LEN;
    assert_eq!((wire - payload) % codec::HEADER_LEN, 0);
    assert!(
        headers >= sizes.len(),
        "{headers} headers for {} messages",
        sizes.len()
    );
}
