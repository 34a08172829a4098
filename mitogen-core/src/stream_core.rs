//! The stream protocol as a state machine: bytes in, messages out; messages
//! in, bytes out. No IO, no clock, no threads.
//!
//! One end of a stream is a [`StreamCore`]: an [`Inbound`] half that turns
//! the bytes read from the peer into whole messages, and an [`Outbound`]
//! half that turns queued messages into the bytes to write. The broker owns
//! each stream's `Inbound` (only it reads); the `Outbound` sits under the
//! lock of the stream's writer (`StreamOut`), since any thread may send.
//! `mitogen_test_support::Mesh` owns both halves of every stream and joins
//! them with bounded byte pipes under a virtual clock, and the `mesh` fuzz
//! target drives that, so fragmentation, reassembly and backpressure run
//! there exactly as they do on sockets.
//!
//! # Large messages are split on the wire
//!
//! A payload over [`FRAGMENT`] bytes may go out as several frames, each with
//! the full 26-byte header of the message and part of its payload; every
//! frame but the last has [`Enc::MORE`] set in `enc`. Queued messages wait
//! in *lanes*, one per (destination, source, handle), and each round takes
//! one fragment of at most [`FRAGMENT`] bytes from each lane in turn, so a
//! small call never waits behind more than one fragment of each bulk
//! transfer (or, when a transfer is alone on the link, one frame of at most
//! [`ALONE_MAX`] bytes). Order is kept within a lane (a lane's fragments
//! never interleave, which is what lets the receiver reassemble by that
//! key); a large message may be overtaken by smaller ones sent after it to
//! other handles. Only the destination reassembles: a router in between
//! forwards the frames as they come.
//!
//! # Backpressure
//!
//! [`Outbound::pending`] counts what is queued. Above [`HIGH_WATER`]
//! ([`Outbound::is_full`]) senders wait ([`Outbound::must_wait`] says who)
//! and the driver stops reading the streams whose messages it routed here,
//! until the queue is back under [`LOW_WATER`] ([`Outbound::is_clear`]).
//!
//! # Call order
//!
//! - **Inbound**: bytes go in with [`Inbound::feed`] (or are read straight
//!   into [`Inbound::buffer_mut`], sized by [`Inbound::read_hint`]); then
//!   [`Inbound::poll`] until it returns `Ok(None)`, routing each
//!   [`Input::Message`] and answering each [`Input::TooLarge`] (with
//!   `RouterCore::refuse_too_large`). An `Err` closes the stream with its
//!   reason; nothing more is read from it.
//! - **Outbound**: a writer with nothing queued may write a one-frame
//!   message itself ([`Outbound::can_write_direct`], the fast path) and
//!   hand back what the socket did not take ([`Outbound::rest_of_direct`]);
//!   anything else goes in with [`Outbound::queue`]. The bytes to write are
//!   [`Outbound::next_bytes`]; after a write, [`Outbound::advance`] by what
//!   went out. A message the stream cannot take is answered by the dead
//!   reply `queue` or [`Outbound::stalled`] returns.
//! - **Getters** at any time: [`Outbound::pending`], [`Outbound::is_full`],
//!   [`Outbound::is_clear`], [`Outbound::is_empty`].

#![deny(clippy::disallowed_methods)] // sans-IO: no clock, threads or processes (clippy.toml)

use crate::ids::{ContextId, Handle, IdMap};
use crate::message::codec::{self, DecodeError, Decoder};
use crate::message::{self as msgs, Enc, Message};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::collections::hash_map::Entry;

/// Largest payload of one frame on the wire: larger messages are split.
pub const FRAGMENT: usize = 256 << 10;
/// Largest frame a lane sends when no other lane is waiting.
pub const ALONE_MAX: usize = 1 << 20;
/// Queued bytes on one stream above which senders wait and inputs pause.
pub const HIGH_WATER: usize = 8 << 20;
/// Queued bytes under which waiting senders and paused inputs resume.
pub const LOW_WATER: usize = 4 << 20;

/// Split messages one stream may have in progress at once before it is
/// considered corrupt.
pub const MAX_PARTIALS: usize = 64;

/// What a lane (and a split message being reassembled) is keyed by:
/// (destination, source, handle).
pub type LaneKey = (ContextId, ContextId, Handle);

fn lane_key(msg: &Message) -> LaneKey {
    (msg.dst_id, msg.src_id, msg.handle)
}

/// Both halves of one end of a stream, for a driver that owns both (the
/// mesh); the broker and the stream writer each hold one half.
#[derive(Debug)]
pub struct StreamCore {
    /// Bytes from the peer into messages.
    pub inbound: Inbound,
    /// Messages to the peer into bytes.
    pub outbound: Outbound,
}

impl StreamCore {
    /// The stream end of context `me`, refusing messages over
    /// `max_message_size`.
    pub fn new(me: ContextId, max_message_size: usize) -> Self {
        Self {
            inbound: Inbound::new(me, max_message_size),
            outbound: Outbound::new(me),
        }
    }
}

// ---- input ----------------------------------------------------------------

/// Why a stream must be closed: the peer sent what no honest peer sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A frame header is invalid.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    /// More than [`MAX_PARTIALS`] split messages were in progress at once.
    #[error("too many split messages in progress")]
    TooManySplit,
}

/// What [`Inbound::poll`] produced.
#[derive(Debug)]
pub enum Input {
    /// A whole message (or a frame for another context, forwarded as it
    /// is): route it.
    Message(Message),
    /// A split message for this context grew over `max_message_size`: its
    /// header (payload empty) and the length it reached. The fragments were
    /// dropped; answer it with `RouterCore::refuse_too_large`.
    TooLarge {
        /// The message's header fields (`enc` without [`Enc::MORE`]).
        head: Message,
        /// The payload bytes that arrived.
        len: usize,
    },
}

/// A split message being put back together: its first frame (header
/// fields) and the fragments so far (joined in one copy at the end);
/// `None` once it went over the limit.
#[derive(Debug)]
struct Partial {
    head: Message,
    data: Option<Vec<Bytes>>,
    len: usize,
}

/// The input half: decodes frames and reassembles split messages for this
/// context.
#[derive(Debug)]
pub struct Inbound {
    me: ContextId,
    max_message_size: usize,
    decoder: Decoder,
    buf: BytesMut,
    partials: IdMap<LaneKey, Partial>,
}

impl Inbound {
    /// The input half of context `me`'s end.
    pub fn new(me: ContextId, max_message_size: usize) -> Self {
        Self {
            me,
            max_message_size,
            decoder: Decoder::new(max_message_size),
            buf: BytesMut::new(),
            partials: IdMap::default(),
        }
    }

    /// Appends bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer of bytes not decoded yet, for a reader that reads straight
    /// into it (append only).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes not decoded yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the frame at the front needs (0 while its header
    /// is incomplete): lets a reader reserve room for a large frame at once.
    pub fn read_hint(&self) -> usize {
        self.decoder
            .frame_len_hint(&self.buf)
            .map_or(0, |n| n.saturating_sub(self.buf.len()))
    }

    /// The next message out of the buffered bytes; `Ok(None)` when more
    /// bytes are needed. `source_ok` is the router's reverse-path check,
    /// asked before the fragments of a split message for this context are
    /// kept: one that fails it is handed on as it is, for the router to drop
    /// (and log).
    ///
    /// # Errors
    /// [`StreamError`] when the stream is corrupt: close it.
    #[inline]
    pub fn poll(
        &mut self,
        mut source_ok: impl FnMut(&Message) -> bool,
    ) -> Result<Option<Input>, StreamError> {
        loop {
            let Some(m) = self.decoder.decode(&mut self.buf)? else {
                return Ok(None);
            };
            // The common case, kept small enough to inline into the
            // reader's loop: a whole frame, or one for another context.
            let whole = !m.enc.is_more()
                && (self.partials.is_empty() || !self.partials.contains_key(&lane_key(&m)));
            if m.dst_id != self.me || whole {
                return Ok(Some(Input::Message(m)));
            }
            if let Some(input) = self.split(m, &mut source_ok)? {
                return Ok(Some(input));
            }
        }
    }

    /// Takes one frame of a split message for this context; `Ok(None)`
    /// while more are to come.
    #[inline(never)]
    fn split(
        &mut self,
        m: Message,
        source_ok: &mut impl FnMut(&Message) -> bool,
    ) -> Result<Option<Input>, StreamError> {
        let n = self.partials.len();
        let mut entry = match self.partials.entry(lane_key(&m)) {
            Entry::Occupied(e) => e,
            Entry::Vacant(v) => {
                if !source_ok(&m) {
                    return Ok(Some(Input::Message(m)));
                }
                if n >= MAX_PARTIALS {
                    return Err(StreamError::TooManySplit);
                }
                let head = Message {
                    data: Bytes::new(),
                    ..m.clone()
                };
                v.insert_entry(Partial {
                    head,
                    data: Some(Vec::new()),
                    len: 0,
                })
            }
        };
        let p = entry.get_mut();
        p.len += m.data.len();
        if p.len > self.max_message_size {
            p.data = None;
        }
        if let Some(frags) = &mut p.data {
            frags.push(m.data);
        }
        if m.enc.is_more() {
            return Ok(None);
        }
        let p = entry.remove();
        let mut head = p.head;
        head.enc = head.enc.base();
        Ok(Some(match p.data {
            Some(frags) => {
                let mut buf = BytesMut::with_capacity(p.len);
                for f in &frags {
                    buf.extend_from_slice(f);
                }
                Input::Message(Message {
                    data: buf.freeze(),
                    ..head
                })
            }
            None => Input::TooLarge { head, len: p.len },
        }))
    }
}

// ---- output ---------------------------------------------------------------

/// Messages to one (destination, source, handle), written in order.
#[derive(Debug)]
struct Lane {
    key: LaneKey,
    /// Messages, and how much of the front one was taken.
    msgs: VecDeque<Message>,
    off: usize,
}

/// The output half: lanes of queued messages, cut into fragments round by
/// round, and the bytes whose order on the wire is already fixed.
#[derive(Debug)]
pub struct Outbound {
    me: ContextId,
    /// Bytes whose order on the wire is fixed: a partly written frame, and
    /// fragments taken from the lanes for the next write.
    wire: VecDeque<Bytes>,
    lanes: VecDeque<Lane>,
    /// Payload bytes queued plus the bytes on `wire`.
    pending: usize,
    closed: bool,
}

/// The dead reply to `msg` from `me` for `reason`, if it wants one: not for
/// the fragments of a split message (only its last frame is answered).
fn dead_for(me: ContextId, msg: &Message, reason: &str) -> Option<Message> {
    if msg.enc.is_more() {
        return None;
    }
    msg.dead_reply(me, reason)
}

impl Outbound {
    /// The output half of context `me`'s end (`me` signs dead replies).
    pub fn new(me: ContextId) -> Self {
        Self {
            me,
            wire: VecDeque::new(),
            lanes: VecDeque::new(),
            pending: 0,
            closed: false,
        }
    }

    /// Bytes queued, waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether the queue is over [`HIGH_WATER`].
    pub fn is_full(&self) -> bool {
        self.pending > HIGH_WATER
    }

    /// Whether the queue is at or under [`LOW_WATER`].
    pub fn is_clear(&self) -> bool {
        self.pending <= LOW_WATER
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.lanes.is_empty()
    }

    /// Whether the stream was closed ([`Outbound::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a sender of `msg` must wait for room: the queue is full,
    /// unless `msg` is one frame and its lane holds nothing (the mark pushes
    /// back on whoever fills the queue, and a small call on a link busy
    /// with a large message is not that; each lane so holds at most one such
    /// message beyond the mark).
    pub fn must_wait(&self, msg: &Message) -> bool {
        if !self.is_full() {
            return false;
        }
        let key = lane_key(msg);
        msg.data.len() > FRAGMENT || self.lanes.iter().any(|l| l.key == key)
    }

    /// Whether the writer may write `msg` itself, now, as one frame (the
    /// fast path): nothing is queued and it needs no splitting.
    pub fn can_write_direct(&self, msg: &Message) -> bool {
        !self.closed && self.is_empty() && msg.data.len() <= FRAGMENT
    }

    /// The fast path wrote `written` bytes of `msg`'s frame (whose header is
    /// `header`) and the socket took no more: queues the rest, first on the
    /// wire.
    pub fn rest_of_direct(
        &mut self,
        header: &[u8; codec::HEADER_LEN],
        msg: &Message,
        written: usize,
    ) {
        let total = header.len() + msg.data.len();
        if written >= total {
            return;
        }
        if written < header.len() {
            self.wire
                .push_back(Bytes::copy_from_slice(&header[written..]));
            if !msg.data.is_empty() {
                self.wire.push_back(msg.data.clone());
            }
        } else {
            self.wire
                .push_back(msg.data.slice(written - header.len()..));
        }
        self.pending += total - written;
    }

    /// Queues `msg` in its lane.
    ///
    /// # Errors
    /// The stream is closed: `Err` holds the dead reply to route ("no
    /// route"), if `msg` wants one.
    pub fn queue(&mut self, msg: Message) -> Result<(), Option<Message>> {
        if self.closed {
            return Err(dead_for(self.me, &msg, msgs::DEAD_NO_ROUTE));
        }
        self.pending += msg.data.len();
        let key = lane_key(&msg);
        match self.lanes.iter_mut().find(|l| l.key == key) {
            Some(lane) => lane.msgs.push_back(msg),
            None => self.lanes.push_back(Lane {
                key,
                msgs: VecDeque::from([msg]),
                off: 0,
            }),
        }
        Ok(())
    }

    /// The dead reply for a message dropped because its sender waited for
    /// room until its deadline (`reason` says so), if it wants one.
    pub fn stalled(&self, msg: &Message, reason: &str) -> Option<Message> {
        dead_for(self.me, msg, reason)
    }

    /// The bytes to write next, in order (empty when nothing is queued).
    /// When the wire has drained, commits the next round to it first.
    pub fn next_bytes(&mut self) -> &VecDeque<Bytes> {
        if self.wire.is_empty() {
            self.refill();
        }
        &self.wire
    }

    /// `n` bytes from the front of [`Outbound::next_bytes`] were written.
    pub fn advance(&mut self, mut n: usize) {
        self.pending = self.pending.saturating_sub(n);
        while let (true, Some(front)) = (n > 0, self.wire.front_mut()) {
            if n >= front.len() {
                n -= front.len();
                self.wire.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                n = 0;
            }
        }
    }

    /// Marks the stream closed and drops everything queued.
    pub fn close(&mut self) {
        self.closed = true;
        self.wire.clear();
        self.lanes.clear();
        self.pending = 0;
    }

    /// Commits the next round to the wire: one fragment from each waiting
    /// lane. A lane that is alone may send up to [`ALONE_MAX`] in one frame:
    /// nothing waits behind it, and a message of up to that size then
    /// arrives whole (no reassembly copy). Payload bytes were counted as
    /// pending when queued; headers are counted now, as their number depends
    /// on how the payload is cut.
    fn refill(&mut self) {
        let round = self.lanes.len();
        let step = if round == 1 { ALONE_MAX } else { FRAGMENT };
        for _ in 0..round {
            let Some(mut lane) = self.lanes.pop_front() else {
                return;
            };
            let Some(msg) = lane.msgs.front() else {
                continue;
            };
            let len = msg.data.len();
            let end = (lane.off + step).min(len);
            self.pending += codec::HEADER_LEN;
            let mut head = Message {
                data: Bytes::new(),
                ..msg.clone()
            };
            if end < len {
                head.enc = Enc(head.enc.0 | Enc::MORE.0);
            }
            let mut header = codec::encode_header(&head);
            let cut = u32::try_from(end - lane.off).unwrap_or(u32::MAX);
            header[22..26].copy_from_slice(&cut.to_be_bytes());
            self.wire.push_back(Bytes::copy_from_slice(&header));
            if end > lane.off {
                self.wire.push_back(msg.data.slice(lane.off..end));
            }
            if end == len {
                lane.msgs.pop_front();
                lane.off = 0;
            } else {
                lane.off = end;
            }
            if !lane.msgs.is_empty() {
                self.lanes.push_back(lane);
            }
        }
    }
}

#[cfg(test)]
mod tests;
