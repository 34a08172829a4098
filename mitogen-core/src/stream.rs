//! The write half of a stream, shared by every thread that routes to it.
//!
//! Any thread may write a frame: it takes the stream's lock and, when nothing
//! is queued, writes straight to the socket (a vectored write of header and
//! payload, no copy). Only what the socket does not take (`WouldBlock`) is
//! queued, and the broker is asked to flush it when the fd turns writable.
//!
//! What is queued, how it is cut into fragments by lane, the high- and
//! low-water marks and which messages get dead replies are decided by the
//! sans-IO [`Outbound`] half of the stream protocol
//! ([`crate::stream_core`]); this file owns the fd, the lock, the waits
//! for room and the drain hooks.

use crate::ids::ContextId;
use crate::message::{Message, codec};
use crate::stream_core::Outbound;
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::stream_core::{HIGH_WATER, LOW_WATER};

/// Slices handed to one `writev`.
const IOV_MAX: usize = 64;

pub(crate) use crate::machine::StreamId;

/// The stream protocol's output half and what the threads around it wait on.
struct OutQueue {
    core: Outbound,
    want_write: bool,
    /// Threads in [`StreamOut::wait_room`].
    waiters: usize,
    /// Run when the queue drops to (or under) their threshold, or closes.
    drained: Vec<(usize, DrainHook)>,
}

type DrainHook = Box<dyn FnOnce() + Send>;

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
    /// [`Outbound::pending`], readable without the lock.
    pending: AtomicUsize,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    /// Asks the broker to flush this stream when its fd turns writable.
    want_write: WantWrite,
}

/// How a [`StreamOut`] asks its driver (the broker) for WRITABLE.
pub(crate) type WantWrite = Box<dyn Fn() + Send + Sync>;

/// Why a message could not be queued: the stream is closed. Holds the
/// dead reply to route, if the message wants one.
#[derive(Debug)]
pub(crate) struct Closed(pub(crate) Option<Message>);

impl StreamOut {
    /// The writer of a stream from context `me` to `remote_id`.
    pub(crate) fn new(
        id: StreamId,
        me: ContextId,
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
            q: Mutex::new(OutQueue {
                core: Outbound::new(me),
                want_write: false,
                waiters: 0,
                drained: Vec::new(),
            }),
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

    fn sync_pending(&self, q: &OutQueue) -> usize {
        let now = q.core.pending();
        self.pending.store(now, Ordering::Relaxed);
        now
    }

    /// Waits while the queue is over [`HIGH_WATER`], until it is back under
    /// [`LOW_WATER`] (or the stream closes). Returns false at the deadline.
    /// A message [`Outbound::must_wait`] lets through goes at once.
    pub(crate) fn wait_room(&self, msg: &Message, deadline: Instant) -> bool {
        if !self.is_full() {
            return true;
        }
        let mut q = self.q.lock();
        if !q.core.must_wait(msg) {
            return true;
        }
        q.waiters += 1;
        let mut ok = true;
        while self.is_full() && !q.core.is_closed() {
            if self.room.wait_until(&mut q, deadline).timed_out() {
                ok = !self.is_full() || q.core.is_closed();
                break;
            }
        }
        q.waiters -= 1;
        ok
    }

    /// The dead reply to `msg`, dropped because its sender waited for room
    /// until its deadline (`reason`), if it wants one.
    pub(crate) fn stalled(&self, msg: &Message, reason: &str) -> Option<Message> {
        self.q.lock().core.stalled(msg, reason)
    }

    /// Writes one message now, or queues what the socket does not take.
    ///
    /// # Errors
    /// [`Closed`] (with the dead reply to route) when the stream is closed.
    pub(crate) fn send(&self, msg: &Message) -> Result<(), Closed> {
        let mut q = self.q.lock();
        if q.core.can_write_direct(msg) {
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
            q.core.rest_of_direct(&header, msg, done);
            self.sync_pending(&q);
        } else {
            q.core.queue(msg.clone()).map_err(Closed)?;
            self.sync_pending(&q);
            if !q.want_write {
                // Nothing is being flushed: start writing from this thread.
                let _ = self.write_queued(&mut q);
                if q.core.is_empty() {
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
            let wire = q.core.next_bytes();
            if wire.is_empty() {
                self.sync_pending(q);
                return Ok(true);
            }
            let slices: Vec<IoSlice<'_>> =
                wire.iter().take(IOV_MAX).map(|b| IoSlice::new(b)).collect();
            let r = (&*self.tx).write_vectored(&slices);
            drop(slices);
            let n = match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Headers of the round just cut count as pending.
                    self.sync_pending(q);
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(false),
                        _ => Err(e),
                    };
                }
            };
            self.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            q.core.advance(n);
            let now = self.sync_pending(q);
            if q.waiters > 0 && now <= LOW_WATER {
                self.room.notify_all();
            }
            if !q.drained.is_empty() {
                fire_drained(q, now);
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
        if q.core.is_closed() || self.pending_bytes() <= below {
            drop(q);
            f();
            return;
        }
        q.drained.push((below, f));
    }

    /// Marks the stream closed and drops anything queued.
    pub(crate) fn close(&self) {
        let mut q = self.q.lock();
        q.core.close();
        self.sync_pending(&q);
        self.room.notify_all();
        fire_drained(&mut q, usize::MAX);
    }

    /// Writes bytes that are not a frame (tests of corrupt streams only).
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> bool {
        let q = self.q.lock();
        !q.core.is_closed() && q.core.is_empty() && (&*self.tx).write_all(bytes).is_ok()
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
