//! The sender pump: one thread per serving context that feeds every
//! transfer round robin, each under its [`Window`].
//!
//! After a transfer's last read the pump checks its source is still what
//! it was when opened ([`Source::verify`]) and sends `End` only then;
//! otherwise the receiver gets a [`Cause::Changed`](super::error::Cause)
//! error and writes nothing.

use super::error::{Cause, Place, Stage};
use super::source::Source;
use super::window::Window;
use super::{CHUNK, Checksum, Control, IDLE_TIMEOUT, LINK_QUEUE_CAP, Progress};
use mitogen_core::layer::LayerRouter;
use mitogen_core::{ContextId, Router, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Transfer {
    id: u64,
    target: ContextId,
    sink: Sender,
    /// What the receiver asked for (a path or a push key).
    path: String,
    src: Source,
    sum: Checksum,
    /// Data bytes are counted by `window`; this is the file offset reached
    /// (data and holes).
    offset: u64,
    /// Where the data region `offset` is in ends (a hole or the end).
    data_end: u64,
    /// Bytes of holes sent as lengths.
    holes: u64,
    window: Window,
    end_sent: bool,
    failed: bool,
}

impl Transfer {
    pub(super) fn new(target: ContextId, sink: Sender, path: String, src: Source) -> Self {
        Self {
            id: 0,
            target,
            sink,
            path,
            src,
            sum: Checksum::default(),
            offset: 0,
            data_end: 0,
            holes: 0,
            window: Window::new(Instant::now()),
            end_sent: false,
            failed: false,
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            // Holes count as done once sent (they need no acknowledgement).
            done: (self.window.acked() + self.holes).min(self.src.size),
            total: self.src.size,
            rate: self.window.rate(Instant::now()),
        }
    }

    fn done(&self) -> bool {
        self.end_sent && self.window.acked() == self.window.sent()
    }

    /// Whether every byte of the source has been sent (as data or holes).
    fn all_sent(&self) -> bool {
        self.offset == self.src.size
    }

    /// Sends the end (or why there is none) after the last chunk.
    fn finish(&mut self, router: &Router) {
        let place = Place::new(router, &self.src.path);
        let sum = self.sum.finish();
        let end = match self.src.verify(&place, sum) {
            Ok(()) => Control::End {
                size: self.src.size,
                checksum: sum,
            },
            Err(e) => {
                log::warn!("{e}");
                self.failed = true;
                Control::Error(e)
            }
        };
        if self.sink.send(router, &end).is_err() {
            self.failed = true;
        }
        self.end_sent = true;
    }

    /// Sends the next chunk, or the hole before it.
    fn send_chunk(&mut self, router: &Router) {
        if self.offset >= self.data_end {
            let (data, end) = data_region(&self.src.file, self.offset, self.src.size);
            self.data_end = end;
            if data > self.offset {
                let len = data - self.offset;
                if self.sink.send(router, &Control::Hole { len }).is_err() {
                    self.failed = true;
                    return;
                }
                self.sum.zeros(len);
                self.offset = data;
                self.holes += len;
                return;
            }
        }
        let at = self.offset;
        let len = (self.data_end - at).min(CHUNK as u64) as usize;
        match mitogen_core::transport::read_payload_at(&self.src.file, at, len) {
            Ok(chunk) => {
                self.sum.update(&chunk);
                self.sink.send_bytes(router, chunk);
                self.offset += len as u64;
                self.window.on_sent(len as u64, Instant::now());
            }
            Err(e) => {
                let place = Place::new(router, &self.src.path);
                let cause = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Cause::Changed(format!("shrank below {} bytes", at + len as u64))
                } else {
                    e.into()
                };
                let _ = self
                    .sink
                    .send(router, &Control::Error(place.err(Stage::Read, cause)));
                self.failed = true;
            }
        }
    }
}

/// The data region at or after `at` in a file of `size` bytes: `(start,
/// end)`, where `start > at` means `at..start` is a hole. A file system
/// that cannot tell (no `SEEK_DATA`) reports everything as data. Both ends
/// stay within `at..=size`, even if the file grew since it was opened (the
/// check after the last read reports that).
fn data_region(file: &std::fs::File, at: u64, size: u64) -> (u64, u64) {
    use rustix::fs::{SeekFrom, seek};
    match seek(file, SeekFrom::Data(at)) {
        Ok(start) if start >= size => (size, size),
        Ok(start) => {
            let start = start.max(at);
            let end = seek(file, SeekFrom::Hole(start)).map_or(size, |h| h.clamp(start, size));
            // A region must make progress: an empty one is read as data.
            if end > start {
                (start, end)
            } else {
                (start, size)
            }
        }
        // No data after `at`: the rest is a hole.
        Err(e) if e == rustix::io::Errno::NXIO => (size, size),
        Err(_) => (at, size),
    }
}

#[derive(Default)]
pub(super) struct Pump {
    state: Mutex<PumpState>,
    wake: Arc<Condvar>,
    /// Targets whose full link has a drain hook waiting to wake the pump.
    armed: Arc<Mutex<HashSet<ContextId>>>,
    pub(super) ack: Mutex<Option<Sender>>,
}

#[derive(Default)]
struct PumpState {
    transfers: Vec<Transfer>,
    next_id: u64,
    next_turn: usize,
    finished: HashMap<(ContextId, String), Progress>,
}

impl Pump {
    pub(super) fn start(&self, mut t: Transfer) -> u64 {
        let mut st = self.state.lock();
        st.next_id += 1;
        t.id = st.next_id;
        let id = t.id;
        st.transfers.push(t);
        self.wake.notify_one();
        id
    }

    /// An acknowledgement from `from`: only the transfer's receiver counts.
    pub(super) fn ack(&self, from: ContextId, id: u64, acked: u64) {
        let mut st = self.state.lock();
        if let Some(t) = st
            .transfers
            .iter_mut()
            .find(|t| t.id == id && t.target == from)
        {
            t.window.on_ack(acked, Instant::now());
        }
        self.wake.notify_one();
    }

    pub(super) fn progress(&self, target: ContextId, path: &str) -> Option<Progress> {
        let st = self.state.lock();
        st.transfers
            .iter()
            .rev()
            .find(|t| t.target == target && t.path == path)
            .map(Transfer::progress)
            .or_else(|| st.finished.get(&(target, path.to_owned())).copied())
    }

    pub(super) fn run(&self, router: &Router) {
        loop {
            let mut st = self.state.lock();
            if router.is_shut_down() {
                return;
            }
            // Finished, failed, or abandoned (receiver gone or silent).
            let now = Instant::now();
            let mut i = 0;
            while i < st.transfers.len() {
                let t = &st.transfers[i];
                let gone = !router.is_connected(t.target) || t.window.idle(now) > IDLE_TIMEOUT;
                if t.done() || t.failed || gone {
                    let t = st.transfers.swap_remove(i);
                    if gone && !t.end_sent {
                        log::debug!("transfer of {} to context {} abandoned", t.path, t.target);
                    }
                    // Progress of finished transfers is kept for callers that
                    // poll after the end; bounded for long-lived controllers.
                    if st.finished.len() >= 4096 {
                        st.finished.clear();
                    }
                    st.finished.insert((t.target, t.path.clone()), t.progress());
                } else {
                    i += 1;
                }
            }
            if st.transfers.is_empty() {
                self.wake.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            let mut progressed = false;
            let mut link_full = false;
            let n = st.transfers.len();
            let first = st.next_turn % n;
            st.next_turn = st.next_turn.wrapping_add(1);
            for k in 0..n {
                let t = &mut st.transfers[(first + k) % n];
                if t.end_sent || t.failed {
                    continue;
                }
                if t.all_sent() {
                    t.finish(router);
                    progressed = true;
                    continue;
                }
                if !t.window.may_send() {
                    continue;
                }
                if router.pending_bytes(t.target).unwrap_or(0) > LINK_QUEUE_CAP {
                    link_full = true;
                    // Woken when the link drains (no polling).
                    if self.armed.lock().insert(t.target) {
                        let (wake, armed, target) =
                            (self.wake.clone(), self.armed.clone(), t.target);
                        router.when_drained(t.target, LINK_QUEUE_CAP, move || {
                            armed.lock().remove(&target);
                            wake.notify_one();
                        });
                    }
                    continue;
                }
                t.send_chunk(router);
                progressed = true;
            }
            if !progressed {
                // Woken by an ack, a new transfer, or a full link draining.
                // A drain that lands between the check above and this wait
                // is missed (its hook cannot take this lock: the pump holds
                // it while sending), so a full link bounds the wait at 1 ms;
                // otherwise the timeout only bounds how late idle transfers
                // are reaped.
                let wait = if link_full {
                    Duration::from_millis(1)
                } else {
                    Duration::from_millis(100)
                };
                self.wake.wait_for(&mut st, wait);
            }
        }
    }
}
