//! Log forwarding: `log` records in any context reach the controller.
//!
//! An agent installs [`ForwardLogger`], which sends each record to the
//! controller's FORWARD_LOG handle; the controller re-emits it through its
//! own `log` facade with target `mitogen::ctx::<context name>::<target>`.
//! The controller's max level at connect time is passed down and used as the
//! agent's filter, so nothing below it crosses the wire.

use crate::ids::{ContextId, Handle};
use crate::message::Message;
use crate::router::Shared;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::Weak;

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
    let target = format!(
        "mitogen::ctx::{}::{}",
        shared.name_of(msg.src_id),
        rec.target
    );
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(&target)
            .file(rec.file.as_deref())
            .line(rec.line)
            .args(format_args!("{}", rec.message))
            .build(),
    );
}
