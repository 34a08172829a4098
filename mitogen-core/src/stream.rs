//! The write half of a stream, shared by every thread that routes to it.
//!
//! Any thread may write a frame: it takes the stream's lock and, when nothing
//! is queued, writes straight to the socket (a vectored write of header and
//! payload, no copy). Only what the socket does not take (`WouldBlock`) is
//! queued, and the broker is asked to flush it when the fd turns writable.
//! [`StreamOut::pending_bytes`] exposes the queue length for flow control.

use crate::broker::{BrokerTx, Cmd};
use crate::ids::ContextId;
use crate::message::{Message, codec};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Identifies one stream inside a broker.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct StreamId(pub(crate) usize);

#[derive(Default)]
struct OutQueue {
    bufs: VecDeque<Bytes>,
    closed: bool,
    want_write: bool,
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
    pending: AtomicUsize,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    broker: BrokerTx,
}

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
        broker: BrokerTx,
    ) -> Self {
        Self {
            id,
            remote_id,
            name,
            is_parent,
            tx,
            q: Mutex::new(OutQueue::default()),
            pending: AtomicUsize::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            broker,
        }
    }

    /// Bytes queued in this process waiting for the socket to drain.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes one frame now, or queues what the socket does not take.
    pub(crate) fn send(&self, msg: &Message) -> Result<(), Closed> {
        let header = codec::encode_header(msg);
        let total = header.len() + msg.data.len();
        let mut q = self.q.lock();
        if q.closed {
            return Err(Closed);
        }
        let mut done = 0;
        if q.bufs.is_empty() {
            // On an error the broker notices the broken fd on its side and
            // closes the stream; until then behave like a full socket. (No
            // logging here: in an agent a log record is routed, possibly to
            // this very stream, whose lock we hold.)
            done = write_two(&self.tx, &header, &msg.data).unwrap_or(0);
            self.tx_bytes.fetch_add(done as u64, Ordering::Relaxed);
            if done == total {
                return Ok(());
            }
        }
        if done < header.len() {
            q.bufs.push_back(Bytes::copy_from_slice(&header[done..]));
            q.bufs.push_back(msg.data.clone());
        } else {
            q.bufs.push_back(msg.data.slice(done - header.len()..));
        }
        self.pending.fetch_add(total - done, Ordering::Relaxed);
        if !q.want_write {
            q.want_write = true;
            drop(q);
            self.broker.send(Cmd::WantWrite(self.id));
        }
        Ok(())
    }

    /// Called by the broker when the fd is writable. Returns `Ok(true)` when
    /// the queue is now empty (stop asking for WRITABLE).
    pub(crate) fn flush(&self) -> io::Result<bool> {
        let mut q = self.q.lock();
        while !q.bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> =
                q.bufs.iter().take(64).map(|b| IoSlice::new(b)).collect();
            let mut n = match (&*self.tx).write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            drop(slices);
            self.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.pending.fetch_sub(n, Ordering::Relaxed);
            // The written bytes came from the queued buffers, so the queue
            // cannot run out before `n` does.
            while let (true, Some(front)) = (n > 0, q.bufs.front_mut()) {
                if n >= front.len() {
                    n -= front.len();
                    q.bufs.pop_front();
                } else {
                    bytes::Buf::advance(front, n);
                    n = 0;
                }
            }
        }
        q.want_write = false;
        Ok(true)
    }

    /// Marks the stream closed and drops anything queued.
    pub(crate) fn close(&self) {
        let mut q = self.q.lock();
        q.closed = true;
        q.bufs.clear();
        self.pending.store(0, Ordering::Relaxed);
    }

    /// Writes bytes that are not a frame (tests of corrupt streams only).
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> bool {
        let q = self.q.lock();
        !q.closed && q.bufs.is_empty() && (&*self.tx).write_all(bytes).is_ok()
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
