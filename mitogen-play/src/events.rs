//! What the executor reports while it runs.

use mitogen_ansible::Status;
use serde_json::Value;
use std::time::Duration;

/// Per-host counters, as in Ansible's PLAY RECAP.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Tasks that ran (ok, changed, or failed but ignored).
    pub ok: u32,
    /// Of those, changed.
    pub changed: u32,
    /// Unreachable results.
    pub unreachable: u32,
    /// Failed tasks (not ignored, not rescued).
    pub failed: u32,
    /// Skipped tasks.
    pub skipped: u32,
    /// Failures a `rescue:` handled.
    pub rescued: u32,
    /// Failures `ignore_errors` let through.
    pub ignored: u32,
}

/// One task's result on one host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostResult {
    /// Inventory name.
    pub host: String,
    /// Task name as displayed (`role : name`).
    pub task: String,
    /// The action.
    pub action: String,
    /// The callback event.
    pub status: Status,
    /// `changed`.
    pub changed: bool,
    /// A failure that `ignore_errors`/`ignore_unreachable` let through.
    pub ignored: bool,
    /// The dict a callback plugin would get.
    pub result: Value,
    /// How long the host took.
    pub duration: Duration,
    /// `delegate_to` target.
    pub delegated_to: Option<String>,
    /// Where the task is written (file, line and column), for the
    /// excerpt an error shows.
    pub origin: crate::Loc,
    /// How its failure reads (ansible-core's error normalization).
    pub raised: Raised,
}

/// How a failure was raised, which decides how it reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Raised {
    /// A failed result the module or action returned: `Task failed:
    /// Module failed: <msg>` (or `Action failed:`).
    #[default]
    Returned,
    /// An exception the action raised: `Task failed: <msg>`.
    InTask,
    /// An exception before the task ran (its loop's items): `<msg>`.
    Bare,
}

/// An executor event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A play starts on these hosts.
    PlayStart {
        /// Its name.
        name: String,
        /// The hosts it matched.
        hosts: Vec<String>,
    },
    /// A task (or handler) starts.
    TaskStart {
        /// Display name.
        name: String,
        /// A handler.
        handler: bool,
        /// Its file:line.
        loc: String,
    },
    /// A result.
    HostResult(HostResult),
    /// `include_tasks`/`include_role` brings a file (or a role) in for
    /// these hosts (ansible-core's `v2_playbook_on_include`).
    Included {
        /// The file's absolute path, or the role's name.
        file: String,
        /// The hosts it is for, in order.
        hosts: Vec<String>,
        /// The loop item's label, when the include loops.
        item: Option<String>,
    },
    /// An `until` attempt failed and the task runs again
    /// (`v2_runner_retry`).
    Retry {
        /// Inventory name.
        host: String,
        /// The task's name (no role prefix).
        task: String,
        /// Attempts still to come.
        retries_left: u64,
    },
    /// A warning for the user.
    Warning(String),
    /// The run ended: stats per host.
    Recap(Vec<(String, Stats)>),
}

/// A result inside the executor: both views.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) changed: bool,
    pub(crate) ignored: bool,
    pub(crate) register: Value,
    pub(crate) callback: Value,
    pub(crate) duration: Duration,
    /// How its failure reads.
    pub(crate) raised: Raised,
}
