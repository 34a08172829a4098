//! Messages and their payload encodings.
//!
//! A [`Message`] is one frame on the wire: Python Mitogen's 26-byte big-endian
//! header followed by `len` payload bytes (see [`codec`]). The payload is either
//! raw bytes ([`Enc::BIN`]) or a serde value encoded with postcard
//! ([`Enc::TYPED`]). A *dead* message (`reply_to == Handle::IS_DEAD`) carries a
//! UTF-8 reason and tells a waiting receiver that no reply will come.

#![deny(clippy::disallowed_methods)] // sans-IO: no clock, threads or processes (clippy.toml)

pub mod codec;

use crate::ids::{ContextId, Handle};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// The payload encoding named in the frame header.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Enc(pub u16);

impl Enc {
    /// Raw bytes, Mitogen's `ENC_BIN` ("MK").
    pub const BIN: Self = Self(0x4d4b);
    /// A serde value encoded with postcard ("RS"), this project's own.
    pub const TYPED: Self = Self(0x5253);

    /// Set in `enc` on every frame of a split message but the last (see
    /// [`crate::stream_core`]: large messages are split on the wire).
    pub const MORE: Self = Self(0x8000);

    /// Whether a router accepts frames with this encoding (with or without
    /// [`Enc::MORE`]).
    pub fn is_known(self) -> bool {
        let base = self.base();
        base == Self::BIN || base == Self::TYPED
    }

    /// The encoding without the [`Enc::MORE`] flag.
    pub fn base(self) -> Self {
        Self(self.0 & !Self::MORE.0)
    }

    /// Whether more frames of the same message follow this one.
    pub fn is_more(self) -> bool {
        self.0 & Self::MORE.0 != 0
    }
}

/// Reason carried by the dead reply to a message whose destination has no route.
pub const DEAD_NO_ROUTE: &str = "no route to destination context";
/// Reason carried by the dead reply to a message refused by a handler's policy.
pub const DEAD_REFUSED: &str = "refused by policy";
/// Reason carried by the dead reply to a message for a handle nobody listens on.
pub const DEAD_INVALID_HANDLE: &str = "invalid handle";
/// Reason carried by the dead reply to a message over `max_message_size`.
pub const DEAD_TOO_LARGE: &str = "message exceeds max_message_size";
/// Reason used by [`crate::Sender::close`] and seen as [`crate::RecvError::Closed`].
pub const DEAD_CHANNEL_CLOSED: &str = "channel closed";
/// Reason given to receivers whose respondent context disconnected.
pub const DEAD_DISCONNECTED: &str = "respondent context disconnected";
/// Reason given to receivers when the local router shuts down.
pub const DEAD_SHUTDOWN: &str = "router shut down";

/// One routed message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Payload encoding.
    pub enc: Enc,
    /// Destination context.
    pub dst_id: ContextId,
    /// Context that sent the message.
    pub src_id: ContextId,
    /// Context whose authority the message acts under (usually `src_id`).
    pub auth_id: ContextId,
    /// Handler in the destination context.
    pub handle: Handle,
    /// Where a reply should go, [`Handle::NONE`] for none, or
    /// [`Handle::IS_DEAD`] to mark this message dead.
    pub reply_to: Handle,
    /// The payload.
    pub data: Bytes,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("enc", &format_args!("{:#06x}", self.enc.0))
            .field("dst_id", &self.dst_id.0)
            .field("src_id", &self.src_id.0)
            .field("auth_id", &self.auth_id.0)
            .field("handle", &self.handle.0)
            .field("reply_to", &self.reply_to.0)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A payload could not be encoded, or decoded as the type the receiver expected.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {ty} ({len} bytes): {reason}")]
pub struct PayloadError {
    op: &'static str,
    len: usize,
    ty: &'static str,
    reason: String,
}

impl PayloadError {
    pub(crate) fn decode<T>(len: usize, reason: impl ToString) -> Self {
        Self {
            op: "decode",
            len,
            ty: std::any::type_name::<T>(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn encode<T: ?Sized>(reason: impl ToString) -> Self {
        Self {
            op: "encode",
            len: 0,
            ty: std::any::type_name::<T>(),
            reason: reason.to_string(),
        }
    }
}

impl Message {
    /// A raw-bytes message to `dst_id`/`handle`. `src_id` and `auth_id` are
    /// filled in by the router when left at the controller's id.
    pub fn bytes(dst_id: ContextId, handle: Handle, data: impl Into<Bytes>) -> Self {
        Self {
            enc: Enc::BIN,
            dst_id,
            src_id: ContextId(0),
            auth_id: ContextId(0),
            handle,
            reply_to: Handle::NONE,
            data: data.into(),
        }
    }

    /// A typed message carrying `value` encoded with postcard.
    ///
    /// # Errors
    /// [`PayloadError`] if `value`'s `Serialize` impl fails (postcard cannot
    /// encode sequences of unknown length).
    pub fn typed<T: Serialize + ?Sized>(
        dst_id: ContextId,
        handle: Handle,
        value: &T,
    ) -> Result<Self, PayloadError> {
        Ok(Self {
            enc: Enc::TYPED,
            ..Self::bytes(dst_id, handle, encode_value(value)?)
        })
    }

    /// Whether this is a dead message.
    pub fn is_dead(&self) -> bool {
        self.reply_to == Handle::IS_DEAD
    }

    /// The reason carried by a dead message (lossy UTF-8).
    pub fn dead_reason(&self) -> Option<String> {
        self.is_dead()
            .then(|| String::from_utf8_lossy(&self.data).into_owned())
    }

    /// The dead reply to this message, sent from `me` with `reason`; `None`
    /// when this message wants no reply or is itself dead.
    pub fn dead_reply(&self, me: ContextId, reason: &str) -> Option<Self> {
        if self.reply_to == Handle::NONE || self.is_dead() {
            return None;
        }
        Some(Self {
            enc: Enc::BIN,
            dst_id: self.src_id,
            src_id: me,
            auth_id: me,
            handle: self.reply_to,
            reply_to: Handle::IS_DEAD,
            data: Bytes::copy_from_slice(reason.as_bytes()),
        })
    }

    /// Decodes a typed payload.
    ///
    /// # Errors
    /// [`PayloadError`] if the encoding is not [`Enc::TYPED`] or the bytes are
    /// not a valid `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        if self.enc != Enc::TYPED {
            return Err(PayloadError::decode::<T>(
                self.data.len(),
                "not a typed payload",
            ));
        }
        postcard::from_bytes(&self.data).map_err(|e| PayloadError::decode::<T>(self.data.len(), e))
    }
}

/// Encodes `value` with the typed-payload codec (postcard), as
/// [`Message::typed`] does.
///
/// # Errors
/// [`PayloadError`] if `value`'s `Serialize` impl fails.
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PayloadError> {
    encode_value(value)
}

/// Encodes `value` with the payload codec (postcard).
pub(crate) fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PayloadError> {
    postcard::to_stdvec(value).map_err(PayloadError::encode::<T>)
}

/// Splits a payload made of a postcard value followed by raw bytes (call
/// requests and replies), without copying the tail.
#[inline]
pub(crate) fn decode_with_tail<'a, T: serde::Deserialize<'a>>(
    data: &'a [u8],
) -> Result<(T, &'a [u8]), PayloadError> {
    postcard::take_from_bytes(data).map_err(|e| PayloadError::decode::<T>(data.len(), e))
}
