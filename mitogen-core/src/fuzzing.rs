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
