use super::*;
use crate::ids::Handle;
use crate::message::codec;
use crate::stream_core::{ALONE_MAX, FRAGMENT};

fn msg(handle: u32, len: usize, fill: u8) -> Message {
    Message::bytes(ContextId(1), Handle(handle), vec![fill; len])
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
        ContextId(0),
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
