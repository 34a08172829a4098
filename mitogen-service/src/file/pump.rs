//! The sender pump: one thread per serving context that feeds every
//! transfer round robin, each under its window.

use super::{
    CHUNK, Checksum, Control, IDLE_TIMEOUT, LINK_QUEUE_CAP, MAX_WINDOW, MIN_WINDOW, Progress,
};
use mitogen_core::{ContextId, Router, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The pump

pub(super) struct Transfer {
    id: u64,
    target: ContextId,
    sink: Sender,
    path: String,
    file: Arc<File>,
    size: u64,
    sent: u64,
    acked: u64,
    sum: Checksum,
    window: u64,
    started: Instant,
    last_ack: Instant,
    /// (end offset, send time) of chunks in flight, for RTT samples.
    in_flight: std::collections::VecDeque<(u64, Instant)>,
    end_sent: bool,
    failed: bool,
}

impl Transfer {
    pub(super) fn new(
        target: ContextId,
        sink: Sender,
        path: String,
        file: Arc<File>,
        size: u64,
    ) -> Self {
        let now = Instant::now();
        Self {
            id: 0,
            target,
            sink,
            path,
            file,
            size,
            sent: 0,
            acked: 0,
            sum: Checksum::default(),
            window: MIN_WINDOW,
            started: now,
            last_ack: now,
            in_flight: std::collections::VecDeque::new(),
            end_sent: false,
            failed: false,
        }
    }

    fn progress(&self) -> Progress {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        Progress {
            done: self.acked,
            total: self.size,
            rate: self.acked as f64 / secs,
        }
    }
}

#[derive(Default)]
pub(super) struct Pump {
    state: Mutex<PumpState>,
    wake: Condvar,
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

    pub(super) fn ack(&self, id: u64, acked: u64) {
        let mut st = self.state.lock();
        if let Some(t) = st.transfers.iter_mut().find(|t| t.id == id) {
            if acked > t.acked && acked <= t.sent {
                // The window tracks twice the bandwidth-delay product: the
                // delivery rate so far times the round trip of the chunk just
                // acknowledged. While the window is the limit, the rate (and
                // so the window) doubles every round trip, like TCP's slow
                // start; once the link is the limit, it settles.
                let now = Instant::now();
                let mut sent_at = None;
                while t.in_flight.front().is_some_and(|(end, _)| *end <= acked) {
                    sent_at = t.in_flight.pop_front().map(|(_, at)| at);
                }
                t.acked = acked;
                t.last_ack = now;
                if let Some(at) = sent_at {
                    let rtt = now.duration_since(at).as_secs_f64();
                    let bdp = (t.progress().rate * rtt * 2.0) as u64;
                    t.window = bdp
                        .clamp(MIN_WINDOW, MAX_WINDOW)
                        .max(t.window.min(MAX_WINDOW));
                }
            }
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
            let mut i = 0;
            while i < st.transfers.len() {
                let t = &st.transfers[i];
                let gone = !router.is_connected(t.target) || t.last_ack.elapsed() > IDLE_TIMEOUT;
                if (t.end_sent && t.acked == t.size) || t.failed || gone {
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
            let n = st.transfers.len();
            let first = st.next_turn % n;
            st.next_turn = st.next_turn.wrapping_add(1);
            for k in 0..n {
                let t = &mut st.transfers[(first + k) % n];
                if t.end_sent || t.failed {
                    continue;
                }
                if t.sent == t.size {
                    let end = Control::End {
                        size: t.size,
                        checksum: t.sum.finish(),
                    };
                    if t.sink.send(router, &end).is_err() {
                        t.failed = true;
                    }
                    t.end_sent = true;
                    progressed = true;
                    continue;
                }
                if t.sent - t.acked >= t.window
                    || router.pending_bytes(t.target).unwrap_or(0) > LINK_QUEUE_CAP
                {
                    continue;
                }
                let len = (t.size - t.sent).min(CHUNK as u64) as usize;
                match mitogen_core::transport::read_payload_at(&t.file, t.sent, len) {
                    Ok(chunk) => {
                        t.sum.update(&chunk);
                        t.sink.send_bytes(router, chunk);
                        t.sent += len as u64;
                        t.in_flight.push_back((t.sent, Instant::now()));
                        progressed = true;
                    }
                    Err(e) => {
                        let _ = t
                            .sink
                            .send(router, &Control::Error(format!("reading {}: {e}", t.path)));
                        t.failed = true;
                    }
                }
            }
            if !progressed {
                // Woken by an ack or a new transfer; a full link queue is
                // polled, since it drains without telling us.
                self.wake.wait_for(&mut st, Duration::from_micros(100));
            }
        }
    }
}
