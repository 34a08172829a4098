//! A transfer's send window: how many bytes may be unacknowledged.
//!
//! Pure state, fed with the time by the pump: [`Window::on_sent`] after
//! each chunk, [`Window::on_ack`] for each acknowledgement, and
//! [`Window::may_send`] before the next chunk.
//!
//! The window tracks twice the bandwidth-delay product: the delivery rate
//! so far times the round trip of the chunk just acknowledged. While the
//! window is the limit, the rate (and so the window) doubles every round
//! trip, like TCP's slow start; once the link is the limit, it settles. It
//! never shrinks, stays within [`MIN_WINDOW`, `MAX_WINDOW`], and ignores
//! acknowledgements of bytes not yet sent (from a confused or hostile
//! receiver).

use super::{MAX_WINDOW, MIN_WINDOW};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

#[derive(Debug)]
pub(super) struct Window {
    limit: u64,
    sent: u64,
    acked: u64,
    started: Instant,
    last_ack: Instant,
    /// (end offset, send time) of chunks in flight, for RTT samples.
    in_flight: VecDeque<(u64, Instant)>,
}

impl Window {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            limit: MIN_WINDOW,
            sent: 0,
            acked: 0,
            started: now,
            last_ack: now,
            in_flight: VecDeque::new(),
        }
    }

    /// Bytes sent so far.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes acknowledged so far.
    pub(super) fn acked(&self) -> u64 {
        self.acked
    }

    /// The current limit on unacknowledged bytes.
    #[cfg(test)]
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether another chunk may go now.
    pub(super) fn may_send(&self) -> bool {
        self.sent - self.acked < self.limit
    }

    /// Records a chunk of `len` bytes sent at `now`.
    pub(super) fn on_sent(&mut self, len: u64, now: Instant) {
        self.sent += len;
        self.in_flight.push_back((self.sent, now));
    }

    /// Records that the receiver has `acked` bytes; returns whether that
    /// was news (not stale, not beyond what was sent).
    pub(super) fn on_ack(&mut self, acked: u64, now: Instant) -> bool {
        if acked <= self.acked || acked > self.sent {
            return false;
        }
        let mut sent_at = None;
        while self.in_flight.front().is_some_and(|(end, _)| *end <= acked) {
            sent_at = self.in_flight.pop_front().map(|(_, at)| at);
        }
        self.acked = acked;
        self.last_ack = now;
        if let Some(at) = sent_at {
            let rtt = now.saturating_duration_since(at).as_secs_f64();
            let bdp = (self.rate(now) * rtt * 2.0) as u64;
            self.limit = bdp.clamp(MIN_WINDOW, MAX_WINDOW).max(self.limit);
        }
        true
    }

    /// Acknowledged bytes per second since the start.
    pub(super) fn rate(&self, now: Instant) -> f64 {
        let secs = now
            .saturating_duration_since(self.started)
            .as_secs_f64()
            .max(1e-9);
        self.acked as f64 / secs
    }

    /// Time since the last acknowledgement (or the start).
    pub(super) fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ack)
    }
}
