//! Log forwarding: `log` records in any context reach the controller.
//!
//! An agent installs [`ForwardLogger`], which sends each record to the
//! controller's FORWARD_LOG handle; the controller re-emits it through its
//! own `log` facade with the record's own target (so `RUST_LOG=myapp=info`
//! filters remote records like local ones) and the message prefixed with
//! `[<context name>] `.
//!
//! The controller's `log::max_level()` is the filter of every agent: it is
//! passed down at connect time, and whenever it changes later (a logger
//! installed after the first connect, a level raised at run time) the next
//! send from the controller first sends SET_LOG_LEVEL down the tree, so
//! nothing below the level crosses the wire and nothing above it is lost.

use crate::ids::{ContextId, Handle};
use crate::message::Message;
use crate::router::Shared;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::Weak;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Serialize, Deserialize)]
struct Record {
    level: u8,
    target: String,
    message: String,
    file: Option<String>,
    line: Option<u32>,
}

thread_local! {
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// The agent's logger.
pub(crate) struct ForwardLogger {
    pub(crate) shared: Weak<Shared>,
}

impl log::Log for ForwardLogger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A log call made while routing a log record would recurse: send
        // those to stderr (the parent logs our stderr) instead.
        if IN_LOG.with(|f| f.replace(true)) {
            eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            let rec = Record {
                level: record.level() as u8,
                target: record.target().to_owned(),
                message: record.args().to_string(),
                file: record.file().map(str::to_owned),
                line: record.line(),
            };
            if let Ok(mut msg) = Message::typed(ContextId::CONTROLLER, Handle::FORWARD_LOG, &rec) {
                msg.src_id = shared.me();
                msg.auth_id = shared.me();
                shared.route(msg);
            }
        } else {
            eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
        }
        IN_LOG.with(|f| f.set(false));
    }

    fn flush(&self) {}
}

/// Controller side: re-emits a forwarded record.
pub(crate) fn emit(shared: &Shared, msg: &Message) {
    let Ok(rec) = msg.decode::<Record>() else {
        log::warn!("undecodable log record from context {}", msg.src_id);
        return;
    };
    let level = match rec.level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    if level > log::max_level() {
        return;
    }
    let name = shared.name_of(msg.src_id);
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(&rec.target)
            .file(rec.file.as_deref())
            .line(rec.line)
            .args(format_args!("[{name}] {}", rec.message))
            .build(),
    );
}

/// The log level last sent to (or configured for) this context's children.
pub(crate) struct LevelSync(AtomicU8);

impl LevelSync {
    /// Starts at `level` (what the children were configured with).
    pub(crate) fn new(level: log::LevelFilter) -> Self {
        Self(AtomicU8::new(level as u8))
    }

    /// Records the level this context was configured with.
    pub(crate) fn set(&self, level: log::LevelFilter) {
        self.0.store(level as u8, Ordering::Relaxed);
    }

    /// Sends the current `log::max_level()` to every child of `shared`'s
    /// context when it differs from the level last sent (or configured):
    /// cheap enough to call on every send (one atomic load when nothing
    /// changed).
    pub(crate) fn sync(&self, shared: &Shared) {
        let now = log::max_level() as u8;
        if self.0.load(Ordering::Relaxed) == now || self.0.swap(now, Ordering::Relaxed) == now {
            return;
        }
        for out in shared.child_streams() {
            if let Ok(mut msg) = Message::typed(out.remote_id, Handle::SET_LOG_LEVEL, &now) {
                msg.src_id = shared.me();
                msg.auth_id = shared.me();
                let _ = out.send(&msg);
            }
        }
    }
}

/// The level a SET_LOG_LEVEL or config byte stands for.
pub(crate) fn level_filter(v: u8) -> log::LevelFilter {
    match v {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Tells the controller (bypassing the `log` facade, which is not ours
/// here) that this agent's records are not forwarded, and why.
pub(crate) fn warn_not_forwarding(shared: &Shared) {
    let rec = Record {
        level: log::Level::Warn as u8,
        target: "mitogen_core::agent".into(),
        message: "a logger was installed before mitogen_core::init in this program, so this \
                  agent's log records go to its stderr (logged by the parent as \
                  mitogen::stderr lines) instead of being forwarded: call init (or \
                  agent_main) before installing a logger"
            .into(),
        file: None,
        line: None,
    };
    if let Ok(mut msg) = Message::typed(ContextId::CONTROLLER, Handle::FORWARD_LOG, &rec) {
        msg.src_id = shared.me();
        msg.auth_id = shared.me();
        shared.route(msg);
    }
}

/// Prints `log` records, forwarded ones included, to stderr as
/// `[LEVEL target] message`, when the environment variable `var` holds a
/// level (`info`, `debug`, ...); returns whether it did. For command-line
/// controllers that have no logger of their own. Call it after
/// [`init`](crate::init) returned (in an agent, the forwarding logger is
/// the one installed).
///
/// ```
/// // `MYTOOL_LOG=debug mytool ...` shows what the library does.
/// let on = mitogen_core::log_to_stderr_from_env("MYTOOL_LOG");
/// assert_eq!(on, std::env::var("MYTOOL_LOG").is_ok_and(|l| l.parse::<log::LevelFilter>().is_ok()));
/// ```
pub fn log_to_stderr_from_env(var: &str) -> bool {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record<'_>) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
        fn flush(&self) {}
    }
    let Some(level) = std::env::var(var)
        .ok()
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
    else {
        return false;
    };
    if log::set_logger(&Stderr).is_err() {
        return false;
    }
    log::set_max_level(level);
    true
}
