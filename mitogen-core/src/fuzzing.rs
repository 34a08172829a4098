//! Bodies of the fuzz targets (see `fuzz/`), kept here so they build with
//! the crate and can be run as ordinary tests.

use crate::message::codec::{Decoder, encode};
use bytes::BytesMut;

/// Feeds arbitrary bytes to the decoder in arbitrary splits: it must never
/// panic, and every frame it accepts must re-encode to the bytes it came from.
pub fn decode_arbitrary(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut dec = Decoder::new(1 << 16);
    let mut buf = BytesMut::new();
    let mut consumed = Vec::new();
    let step = usize::from(split).max(1);
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(msg)) => encode(&msg, &mut consumed),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(
        &consumed[..],
        &data[..consumed.len()],
        "decoded frames must re-encode to their input"
    );
}

/// Random route tables and messages through the routing decision; checks:
/// nothing is forwarded back where it came from; whatever arrived on a
/// stream and is delivered or forwarded passed the reverse-path check for
/// both `src_id` and `auth_id`; forwards follow the route table (or go to the
/// parent); in unidirectional mode nothing passes between two children;
/// oversize messages always get a dead reply.
pub fn route_decisions(data: &[u8]) {
    use crate::ids::IdMap;
    use crate::ids::{ContextId, Handle};
    use crate::machine::{Decision, Identity, decide};
    use crate::message::{Enc, Message};
    use crate::stream::StreamId;

    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    let (Some(flags), Some(me), Some(n)) = (next(), next(), next()) else {
        return;
    };
    let id = Identity {
        me: ContextId(u32::from(me % 8)),
        name: "fuzz".into(),
        ancestors: Vec::new(),
        unidirectional: flags & 1 != 0,
        max_message_size: 64,
    };
    let parent = (flags & 2 != 0).then_some(StreamId(0));
    let mut routes = IdMap::default();
    for _ in 0..n % 8 {
        let (Some(c), Some(s)) = (next(), next()) else {
            return;
        };
        routes.insert(
            ContextId(u32::from(c % 16)),
            StreamId(usize::from(s % 4) + 1),
        );
    }
    let way_back = |c: ContextId| routes.get(&c).copied().or(parent);
    while let (Some(src), Some(auth), Some(dst), Some(from), Some(len)) =
        (next(), next(), next(), next(), next())
    {
        let msg = Message {
            enc: Enc::BIN,
            dst_id: ContextId(u32::from(dst % 16)),
            src_id: ContextId(u32::from(src % 16)),
            auth_id: ContextId(u32::from(auth % 16)),
            handle: Handle(1000),
            reply_to: Handle(u32::from(len & 1)),
            data: vec![0u8; usize::from(len % 80)].into(),
        };
        let from = (from % 5 < 4).then(|| StreamId(usize::from(from % 5)));
        let d = decide(&id, &routes, parent, &msg, from);
        if msg.data.len() > id.max_message_size {
            assert_eq!(d, Decision::Dead(crate::message::DEAD_TOO_LARGE));
            continue;
        }
        if let (Some(f), Decision::Deliver | Decision::Forward(_)) = (from, d) {
            assert_eq!(
                way_back(msg.auth_id),
                Some(f),
                "auth_id passed a bad path: {msg:?} {d:?}"
            );
            assert_eq!(
                way_back(msg.src_id),
                Some(f),
                "src_id passed a bad path: {msg:?} {d:?}"
            );
        }
        if let Decision::Forward(out) = d {
            assert_ne!(Some(out), from, "bounced back: {msg:?}");
            assert_eq!(
                Some(out),
                way_back(msg.dst_id),
                "off the route table: {msg:?}"
            );
            assert_ne!(msg.dst_id, id.me);
            if id.unidirectional && from.is_some() {
                assert!(
                    Some(out) == parent || from == parent,
                    "child to child in unidirectional mode"
                );
            }
        }
        if d == Decision::Deliver {
            assert_eq!(msg.dst_id, id.me);
        }
    }
}

/// Writes raw bytes straight onto the stream from `router`'s context to its
/// parent, bypassing the codec: for tests of how a parent handles garbage.
pub fn write_raw_to_parent(router: &crate::Router, bytes: &[u8]) -> bool {
    let Some(parent) = router.parent_id() else {
        return false;
    };
    let Some(out) = router.shared().stream_by_context(parent) else {
        return false;
    };
    out.write_raw(bytes)
}
