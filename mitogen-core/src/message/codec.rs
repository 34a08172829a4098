//! The IO-free frame codec.
//!
//! Frame layout (big-endian), Python Mitogen's own:
//!
//! ```text
//! +-------+--------+--------+---------+--------+----------+-------+-----------+
//! | enc:2 | dst:4  | src:4  | auth:4  | hdl:4  | reply:4  | len:4 | len bytes |
//! +-------+--------+--------+---------+--------+----------+-------+-----------+
//! ```
//!
//! [`encode_header`] produces the 26 header bytes (the payload is written
//! after them without copying); [`Decoder::decode`] consumes bytes from a
//! buffer and returns `Ok(None)` when it needs more, `Ok(Some(msg))` for a
//! whole frame, and `Err` when the stream is corrupt and must be closed.

use super::{Enc, Message};
use crate::ids::{ContextId, Handle};
use bytes::{Buf, BytesMut};

/// Size of the frame header.
pub const HEADER_LEN: usize = 26;

/// Default `max_message_size`: 128 MiB, as in Python Mitogen.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// Why a byte stream cannot be decoded. Any of these closes the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The `enc` field names no encoding this router understands.
    #[error("unknown payload encoding {0:#06x} (garbage on the stream?)")]
    UnknownEncoding(u16),
    /// The `len` field exceeds the router's `max_message_size`.
    #[error("frame of {len} bytes exceeds max_message_size {max}")]
    TooLarge {
        /// Length the header announced.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
}

/// Writes the 26-byte header of `msg` (whose `len` is `msg.data.len()`).
///
/// # Panics
/// Never for messages a router accepts: payloads over `u32::MAX` bytes are
/// refused earlier by `max_message_size` (at most `u32::MAX`).
pub fn encode_header(msg: &Message) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let len = u32::try_from(msg.data.len()).unwrap_or(u32::MAX);
    h[0..2].copy_from_slice(&msg.enc.0.to_be_bytes());
    h[2..6].copy_from_slice(&msg.dst_id.0.to_be_bytes());
    h[6..10].copy_from_slice(&msg.src_id.0.to_be_bytes());
    h[10..14].copy_from_slice(&msg.auth_id.0.to_be_bytes());
    h[14..18].copy_from_slice(&msg.handle.0.to_be_bytes());
    h[18..22].copy_from_slice(&msg.reply_to.0.to_be_bytes());
    h[22..26].copy_from_slice(&len.to_be_bytes());
    h
}

/// Appends the whole frame (header and payload) of `msg` to `out`.
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    out.extend_from_slice(&encode_header(msg));
    out.extend_from_slice(&msg.data);
}

/// Incremental frame decoder for one stream.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_message_size: usize,
}

impl Decoder {
    /// A decoder refusing payloads over `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size: max_message_size.min(u32::MAX as usize),
        }
    }

    /// How many bytes the frame at the front of `buf` needs in all, once its
    /// header is there: lets the reader reserve room for a large frame at once.
    pub fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        (buf.len() >= HEADER_LEN).then(|| HEADER_LEN + be32(&buf[22..26]) as usize)
    }

    /// Takes one whole frame off the front of `buf`.
    ///
    /// # Errors
    /// [`DecodeError`] when the header is invalid; the stream must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let enc = u16::from_be_bytes([buf[0], buf[1]]);
        if !Enc(enc).is_known() {
            return Err(DecodeError::UnknownEncoding(enc));
        }
        let len = be32(&buf[22..26]) as usize;
        if len > self.max_message_size {
            return Err(DecodeError::TooLarge {
                len: len as u64,
                max: self.max_message_size,
            });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let msg = Message {
            enc: Enc(enc),
            dst_id: ContextId(be32(&buf[2..6])),
            src_id: ContextId(be32(&buf[6..10])),
            auth_id: ContextId(be32(&buf[10..14])),
            handle: Handle(be32(&buf[14..18])),
            reply_to: Handle(be32(&buf[18..22])),
            data: bytes::Bytes::new(),
        };
        buf.advance(HEADER_LEN);
        Ok(Some(Message {
            data: buf.split_to(len).freeze(),
            ..msg
        }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests;
