//! Diagnostics: a periodic dump of a context's state into the log.
//!
//! Set `MITOGEN_RS_DUMP=SECONDS` in the controller's environment (it is passed
//! to every context below it in its configuration), or in one agent's
//! environment (`Local::env`) to dump only that one. Each context then logs, at that interval and
//! with target `mitogen::dump`: its streams (pending, sent and received
//! bytes), its routes, its open handlers (oldest first, with what they wait
//! for), the call its main thread is running and for how long, and the names
//! of its threads. Forwarded logs arrive at the controller, so one log shows
//! where a tree is stuck. This is Python Mitogen's MITOGEN_DUMP_THREAD_STACKS
//! made useful for Rust, whose threads cannot print each other's stacks.

use crate::router::Shared;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The environment variable that turns the dump on.
pub const DUMP_ENV: &str = "MITOGEN_RS_DUMP";

static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();

/// The dump interval: from the agent's config if set first, else the environment.
pub(crate) fn dump_interval() -> Option<Duration> {
    *INTERVAL.get_or_init(|| {
        std::env::var(DUMP_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
    })
}

/// Sets the interval an agent was configured with (first call wins).
pub(crate) fn set_dump_interval(d: Option<Duration>) {
    let _ = INTERVAL.set(d);
}

/// Logs the state of `shared`'s router; `call` is what the main thread is
/// running (and since when).
pub(crate) fn dump(shared: &Shared, call: Option<(String, std::time::Instant)>, reaping: usize) {
    // Gather under the locks, log after releasing them: in an agent, logging
    // routes a message, which takes the same locks.
    let name = &shared.id.name;
    let mut lines = Vec::new();
    {
        let core = shared.core.lock();
        for (_, link) in core.links() {
            let s = &link.out;
            lines.push(format!(
                "stream {} (context {}{}): pending {} B, sent {} B, received {} B",
                s.name,
                s.remote_id,
                if s.is_parent { ", parent" } else { "" },
                s.pending_bytes(),
                s.tx_bytes.load(Ordering::Relaxed),
                s.rx_bytes.load(Ordering::Relaxed),
            ));
        }
        let mut routes: Vec<_> = core.routes().map(|(c, s)| (c.0, s.0)).collect();
        routes.sort_unstable();
        lines.push(format!("routes (context, stream): {routes:?}"));
        let mut open: Vec<_> = core
            .handlers()
            .filter(|(h, _)| h.0 >= crate::Handle::FIRST_DYNAMIC.0)
            .map(|(h, e)| (e.since, h.0, e.label, e.respondent))
            .collect();
        open.sort_unstable_by_key(|o| o.0);
        lines.push(format!(
            "{} open receivers, {reaping} children being reaped",
            open.len()
        ));
        for (since, h, label, resp) in open.iter().take(10) {
            lines.push(format!(
                "  handle {h} ({label}) waiting on {resp:?} for {:?}",
                since.elapsed()
            ));
        }
    }
    if let Some((f, since)) = call {
        lines.push(format!("main thread running {f} for {:?}", since.elapsed()));
    }
    lines.push(format!("threads: {}", thread_names().join(", ")));
    for line in lines {
        log::info!(target: "mitogen::dump", "{name}: {line}");
    }
}

/// Names of this process's threads, from /proc.
pub(crate) fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect();
    names.sort();
    names
}
