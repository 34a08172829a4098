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

thread_local! {
    static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Records the size of what this thread last received.
pub(crate) fn note_len(len: usize) {
    LAST_LEN.with(|l| l.set(len));
}

/// Whether this thread's last receipt was small enough to spin after.
pub(crate) fn interactive() -> bool {
    LAST_LEN.with(|l| l.get()) <= SMALL
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
