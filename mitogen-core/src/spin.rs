//! Adaptive spinning before sleeping.
//!
//! Waking a sleeping thread on another CPU costs tens of microseconds on
//! virtual machines (the idle vCPU must be woken by an IPI through the
//! hypervisor): measured here at ~40 µs per wake-up, against ~2 µs for a
//! switch on the same CPU. A call round trip crosses four threads, so the
//! broker and waiting threads poll for a short window after activity before
//! they block. The window is bounded (default 50 µs, `MITOGEN_RS_SPIN_US`
//! to change, 0 to disable), so an idle tree burns no CPU.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable setting the spin window in microseconds.
pub const SPIN_ENV: &str = "MITOGEN_RS_SPIN_US";

/// The spin window.
pub(crate) fn window() -> Duration {
    *WINDOW.get_or_init(|| {
        let us = std::env::var(SPIN_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

static WINDOW: OnceLock<Duration> = OnceLock::new();

/// Sets the window an agent was configured with (first call wins).
pub(crate) fn set_window(us: u64) {
    let _ = WINDOW.set(Duration::from_micros(us));
}

/// Messages at most this large count as interactive traffic; after a larger
/// one (bulk data) threads do not spin, so they leave the CPU to the
/// programs moving the data (ssh, sshd, the other end).
pub(crate) const SMALL: usize = 16 * 1024;

/// After bulk data a thread does not spin for this long, even after small
/// messages: a bulk transfer's acknowledgements are small, and a broker
/// that spun after each of them took a CPU from ssh/sshd (measured: spin
/// and its `sched_yield`s were a fifth of the controller broker's CPU
/// during a file transfer over ssh).
const BULK_QUIET: Duration = Duration::from_millis(2);

thread_local! {
    static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static LAST_BULK: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Records the size of what this thread last received.
pub(crate) fn note_len(len: usize) {
    LAST_LEN.with(|l| l.set(len));
    if len > SMALL {
        LAST_BULK.with(|b| b.set(Some(Instant::now())));
    }
}

/// Whether this thread's last receipt was small enough to spin after, and
/// no bulk went by in the last [`BULK_QUIET`].
pub(crate) fn interactive() -> bool {
    if LAST_LEN.with(|l| l.get()) > SMALL {
        return false;
    }
    LAST_BULK.with(|b| match b.get() {
        Some(at) if at.elapsed() < BULK_QUIET => false,
        Some(_) => {
            b.set(None);
            true
        }
        None => true,
    })
}

/// Polls `f` until it returns `Some` or the spin window (capped at
/// `deadline`) passes; yields the CPU between tries so a thread with real
/// work on this CPU is not starved.
pub(crate) fn spin<T>(deadline: Option<Instant>, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let w = window();
    if w.is_zero() || !interactive() {
        return None;
    }
    let end = Instant::now() + w;
    let end = deadline.map_or(end, |d| d.min(end));
    let mut i = 0u32;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        i += 1;
        if i % 8 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}
