use super::*;

fn sample(len: usize) -> Message {
    Message {
        enc: Enc::BIN,
        dst_id: ContextId(7),
        src_id: ContextId(0x01020304),
        auth_id: ContextId(9),
        handle: Handle(1001),
        reply_to: Handle(1002),
        data: (0..len).map(|i| i as u8).collect::<Vec<u8>>().into(),
    }
}

#[test]
fn header_matches_python_layout() {
    let h = encode_header(&sample(3));
    assert_eq!(&h[0..2], b"MK");
    assert_eq!(&h[2..6], &[0, 0, 0, 7]);
    assert_eq!(&h[6..10], &[1, 2, 3, 4]);
    assert_eq!(&h[22..26], &[0, 0, 0, 3]);
}

#[test]
fn round_trip_byte_by_byte() {
    let mut wire = Vec::new();
    encode(&sample(0), &mut wire);
    encode(&sample(300), &mut wire);
    let mut dec = Decoder::new(1024);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in wire {
        buf.extend_from_slice(&[b]);
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert_eq!(out, vec![sample(0), sample(300)]);
    assert!(buf.is_empty());
}

#[test]
fn oversize_and_garbage_are_errors() {
    let mut wire = Vec::new();
    encode(&sample(2000), &mut wire);
    let mut buf = BytesMut::from(&wire[..HEADER_LEN]);
    assert_eq!(
        Decoder::new(1000).decode(&mut buf),
        Err(DecodeError::TooLarge {
            len: 2000,
            max: 1000
        })
    );
    let mut buf = BytesMut::from(&b"hello, this is not a mitogen frame"[..]);
    assert_eq!(
        Decoder::new(1000).decode(&mut buf),
        Err(DecodeError::UnknownEncoding(0x6865))
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<crate::Router>();
    send_sync::<crate::Context>();
    send_sync::<crate::Sender>();
    send_sync::<crate::Latch<u32>>();
    fn send<T: Send>() {}
    send::<crate::Receiver>();
    send::<crate::PendingCall<u32>>();
    send::<Message>();
}
