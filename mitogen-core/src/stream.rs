//! The write half of a stream, shared by every thread that routes to it.
//!
//! Any thread may write a frame: it takes the stream's lock and, when nothing
//! is queued, writes straight to the socket (a vectored write of header and
//! payload, no copy). Only what the socket does not take (`WouldBlock`) is
//! queued, and the broker is asked to flush it when the fd turns writable.
//!
//! # Large messages are split on the wire
//!
//! A payload over [`FRAGMENT`] bytes may go out as several frames, each with
//! the full 26-byte header of the message and part of its payload; every
//! frame but the last has [`Enc::MORE`] set in `enc`. Queued messages wait
//! in *lanes*, one per (destination, source, handle), and the writer takes
//! one fragment of at most [`FRAGMENT`] bytes from each lane in turn, so a
//! small call never waits behind more than one fragment of each bulk
//! transfer (or, when a transfer is alone on the link, one frame of at most
//! [`ALONE_MAX`] bytes).
//! Order is kept within a lane (a lane's fragments never interleave, which
//! is what lets the receiver reassemble by that key); a large message may be
//! overtaken by smaller ones sent after it to other handles.
//!
//! # Backpressure
//!
//! [`StreamOut::pending_bytes`] counts what is queued in this process. Above
//! [`HIGH_WATER`], threads other than the broker wait in
//! [`StreamOut::wait_room`] (with a deadline) before queueing more (except
//! a one-frame message whose lane is empty: a small call is not held up
//! for a large message ahead of it to drain), and the
//! broker stops reading the streams whose messages it routed here, until the
//! queue is back under [`LOW_WATER`].

use crate::ids::{ContextId, Handle};
use crate::message::{Enc, Message, codec};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Largest payload of one frame on the wire: larger messages are split.
pub const FRAGMENT: usize = 256 << 10;
/// Largest frame a lane sends when no other lane is waiting.
pub const ALONE_MAX: usize = 1 << 20;
/// Queued bytes on one stream above which senders wait and inputs pause.
pub const HIGH_WATER: usize = 8 << 20;
/// Queued bytes under which waiting senders and paused inputs resume.
pub const LOW_WATER: usize = 4 << 20;
/// Slices handed to one `writev`.
const IOV_MAX: usize = 64;

pub(crate) use crate::machine::StreamId;

type LaneKey = (ContextId, ContextId, Handle);

/// Messages to one (destination, source, handle), written in order.
struct Lane {
    key: LaneKey,
    /// Messages, and how much of the front one was taken.
    msgs: VecDeque<Message>,
    off: usize,
}

#[derive(Default)]
struct OutQueue {
    /// Bytes whose order on the wire is fixed: a partly written frame, and
    /// fragments taken from the lanes for the next write.
    wire: VecDeque<Bytes>,
    lanes: VecDeque<Lane>,
    closed: bool,
    want_write: bool,
    /// Threads in [`StreamOut::wait_room`].
    waiters: usize,
    /// Run when the queue drops to (or under) their threshold, or closes.
    drained: Vec<(usize, DrainHook)>,
}

type DrainHook = Box<dyn FnOnce() + Send>;

impl OutQueue {
    fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.lanes.is_empty()
    }

    fn push(&mut self, msg: Message) {
        let key = (msg.dst_id, msg.src_id, msg.handle);
        match self.lanes.iter_mut().find(|l| l.key == key) {
            Some(lane) => lane.msgs.push_back(msg),
            None => self.lanes.push_back(Lane {
                key,
                msgs: VecDeque::from([msg]),
                off: 0,
            }),
        }
    }

    /// Once the wire has drained, commits the next round to it: one
    /// fragment from each waiting lane. A lane that is alone may send up to
    /// [`ALONE_MAX`] in one frame: nothing waits behind it, and a message
    /// of up to that size then arrives whole (no reassembly copy).
    /// Returns the header bytes it committed (payload bytes were counted
    /// as pending when queued; headers only now, as their number depends on
    /// how the payload is cut).
    fn refill(&mut self) -> usize {
        let mut headers = 0;
        if !self.wire.is_empty() {
            return headers;
        }
        let round = self.lanes.len();
        let step = if round == 1 { ALONE_MAX } else { FRAGMENT };
        for _ in 0..round {
            let Some(mut lane) = self.lanes.pop_front() else {
                return headers;
            };
            let Some(msg) = lane.msgs.front() else {
                continue;
            };
            let len = msg.data.len();
            let end = (lane.off + step).min(len);
            headers += codec::HEADER_LEN;
            let mut head = Message {
                data: Bytes::new(),
                ..msg.clone()
            };
            if end < len {
                head.enc = Enc(head.enc.0 | Enc::MORE.0);
            }
            let mut header = codec::encode_header(&head);
            header[22..26].copy_from_slice(&((end - lane.off) as u32).to_be_bytes());
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
        headers
    }
}

/// The write side of one stream to a neighbouring context.
pub(crate) struct StreamOut {
    pub(crate) id: StreamId,
    /// The context at the other end.
    pub(crate) remote_id: ContextId,
    pub(crate) name: Arc<str>,
    pub(crate) is_parent: bool,
    tx: Arc<File>,
    q: Mutex<OutQueue>,
    room: Condvar,
    pending: AtomicUsize,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    /// Asks the broker to flush this stream when its fd turns writable.
    want_write: WantWrite,
}

/// How a [`StreamOut`] asks its driver (the broker) for WRITABLE.
pub(crate) type WantWrite = Box<dyn Fn() + Send + Sync>;

/// Why a frame could not be written.
#[derive(Debug)]
pub(crate) struct Closed;

impl StreamOut {
    pub(crate) fn new(
        id: StreamId,
        remote_id: ContextId,
        name: Arc<str>,
        is_parent: bool,
        tx: Arc<File>,
        want_write: WantWrite,
    ) -> Self {
        Self {
            id,
            remote_id,
            name,
            is_parent,
            tx,
            q: Mutex::new(OutQueue::default()),
            room: Condvar::new(),
            pending: AtomicUsize::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            want_write,
        }
    }

    /// Bytes queued in this process waiting for the socket to drain.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Whether the queue is over [`HIGH_WATER`].
    pub(crate) fn is_full(&self) -> bool {
        self.pending_bytes() > HIGH_WATER
    }

    /// Waits while the queue is over [`HIGH_WATER`], until it is back under
    /// [`LOW_WATER`] (or the stream closes). Returns false at the deadline.
    ///
    /// A message of one frame whose lane holds nothing goes at once: the
    /// mark is there to push back on whoever fills the queue, and a small
    /// call on a link busy with a large message is not that. Each lane so
    /// holds at most one such message beyond the mark; a sender of many
    /// (the same lane) waits from its second.
    pub(crate) fn wait_room(&self, msg: &Message, deadline: Instant) -> bool {
        if !self.is_full() {
            return true;
        }
        let mut q = self.q.lock();
        let key = (msg.dst_id, msg.src_id, msg.handle);
        if msg.data.len() <= FRAGMENT && !q.lanes.iter().any(|l| l.key == key) {
            return true;
        }
        q.waiters += 1;
        let mut ok = true;
        while self.is_full() && !q.closed {
            if self.room.wait_until(&mut q, deadline).timed_out() {
                ok = !self.is_full() || q.closed;
                break;
            }
        }
        q.waiters -= 1;
        ok
    }

    /// Writes one message now, or queues what the socket does not take.
    pub(crate) fn send(&self, msg: &Message) -> Result<(), Closed> {
        let mut q = self.q.lock();
        if q.closed {
            return Err(Closed);
        }
        if q.is_empty() && msg.data.len() <= FRAGMENT {
            // The fast path: one frame, written by this thread.
            let header = codec::encode_header(msg);
            let total = header.len() + msg.data.len();
            // On an error the broker notices the broken fd on its side and
            // closes the stream; until then behave like a full socket. (No
            // logging here: in an agent a log record is routed, possibly to
            // this very stream, whose lock we hold.)
            let done = write_two(&self.tx, &header, &msg.data).unwrap_or(0);
            self.tx_bytes.fetch_add(done as u64, Ordering::Relaxed);
            if done == total {
                return Ok(());
            }
            if done < header.len() {
                q.wire.push_back(Bytes::copy_from_slice(&header[done..]));
                q.wire.push_back(msg.data.clone());
            } else {
                q.wire.push_back(msg.data.slice(done - header.len()..));
            }
            self.pending.fetch_add(total - done, Ordering::Relaxed);
        } else {
            self.pending.fetch_add(msg.data.len(), Ordering::Relaxed);
            q.push(msg.clone());
            if q.wire.is_empty() && !q.want_write {
                // Nothing is being flushed: start writing from this thread.
                let _ = self.write_queued(&mut q);
                if q.is_empty() {
                    return Ok(());
                }
            }
        }
        if !q.want_write {
            q.want_write = true;
            drop(q);
            (self.want_write)();
        }
        Ok(())
    }

    /// Writes queued bytes until the socket is full or the queue is empty.
    /// `Ok(true)` when the queue is empty.
    fn write_queued(&self, q: &mut OutQueue) -> io::Result<bool> {
        loop {
            let headers = q.refill();
            self.pending.fetch_add(headers, Ordering::Relaxed);
            if q.wire.is_empty() {
                return Ok(true);
            }
            let slices: Vec<IoSlice<'_>> = q
                .wire
                .iter()
                .take(IOV_MAX)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = match (&*self.tx).write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            drop(slices);
            self.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            let before = self.pending.fetch_sub(n, Ordering::Relaxed);
            let now = before - n;
            if q.waiters > 0 && now <= LOW_WATER {
                self.room.notify_all();
            }
            if !q.drained.is_empty() {
                fire_drained(q, now);
            }
            // The written bytes came from the wire buffers, so they cannot
            // run out before `n` does.
            while let (true, Some(front)) = (n > 0, q.wire.front_mut()) {
                if n >= front.len() {
                    n -= front.len();
                    q.wire.pop_front();
                } else {
                    bytes::Buf::advance(front, n);
                    n = 0;
                }
            }
        }
    }

    /// Called by the broker when the fd is writable. Returns `Ok(true)` when
    /// the queue is now empty (stop asking for WRITABLE).
    pub(crate) fn flush(&self) -> io::Result<bool> {
        let mut q = self.q.lock();
        let empty = self.write_queued(&mut q)?;
        if empty {
            q.want_write = false;
        }
        Ok(empty)
    }

    /// Runs `f` once the queue is at or under `below` bytes (at once if it
    /// is already), or when the stream closes. `f` runs on the thread that
    /// drains the queue, usually the broker, with the stream locked: it must
    /// be quick and must not send.
    pub(crate) fn when_drained(&self, below: usize, f: DrainHook) {
        let mut q = self.q.lock();
        if q.closed || self.pending_bytes() <= below {
            drop(q);
            f();
            return;
        }
        q.drained.push((below, f));
    }

    /// Marks the stream closed and drops anything queued.
    pub(crate) fn close(&self) {
        let mut q = self.q.lock();
        q.closed = true;
        q.wire.clear();
        q.lanes.clear();
        self.pending.store(0, Ordering::Relaxed);
        self.room.notify_all();
        fire_drained(&mut q, usize::MAX);
    }

    /// Writes bytes that are not a frame (tests of corrupt streams only).
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> bool {
        let q = self.q.lock();
        !q.closed && q.is_empty() && (&*self.tx).write_all(bytes).is_ok()
    }
}

/// Runs the drain hooks whose threshold `pending` has reached (all of them
/// with `usize::MAX`, when the stream closes).
fn fire_drained(q: &mut OutQueue, pending: usize) {
    let mut i = 0;
    while i < q.drained.len() {
        if pending <= q.drained[i].0 || pending == usize::MAX {
            let (_, f) = q.drained.swap_remove(i);
            f();
        } else {
            i += 1;
        }
    }
}

/// Writes header then payload with as few syscalls as the socket allows;
/// returns how many bytes went out before `WouldBlock`.
fn write_two(tx: &File, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let r = if done < a.len() {
            (&*tx).write_vectored(&[IoSlice::new(&a[done..]), IoSlice::new(b)])
        } else {
            (&*tx).write(&b[done - a.len()..])
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
