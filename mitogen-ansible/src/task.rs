//! The public task and target types: what a deploy tool builds and hands
//! to [`Runner::run`](crate::Runner::run), and what it gets back.

use crate::result::Status;
use mitogen_core::Context;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One task: a module (or action) name, its arguments and task keywords.
#[derive(Debug, Clone)]
pub struct Task {
    pub(crate) name: String,
    pub(crate) args: Value,
    pub(crate) check_mode: bool,
    pub(crate) diff: bool,
    pub(crate) no_log: bool,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) async_limit: u64,
    pub(crate) poll: u64,
    pub(crate) keep_remote_files: bool,
    pub(crate) rlimit_nofile: u64,
    pub(crate) vars: Map<String, Value>,
    pub(crate) template_hook: Option<Arc<dyn crate::jinja::TemplateHook>>,
}

impl Task {
    /// A task running `name` (`ansible.builtin.ping`, `command`, `ns.coll.mod`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            args: json!({}),
            check_mode: false,
            diff: false,
            no_log: false,
            environment: Vec::new(),
            timeout: Duration::from_secs(3600),
            async_limit: 0,
            poll: 15,
            keep_remote_files: false,
            rlimit_nofile: 0,
            vars: Map::new(),
            template_hook: None,
        }
    }

    /// `async:`: run as a background job with this time limit in seconds
    /// (ansible-core's async_wrapper and job files; 0: not async).
    pub fn async_limit(mut self, seconds: u64) -> Self {
        self.async_limit = seconds;
        self
    }

    /// `poll:` for async tasks (default 15): poll the job every this many
    /// seconds until it ends; 0: fire and forget (the result carries
    /// `ansible_job_id` for a later `async_status`).
    pub fn poll(mut self, seconds: u64) -> Self {
        self.poll = seconds;
        self
    }

    /// `ANSIBLE_KEEP_REMOTE_FILES`: leave the task's remote tmp dir (and
    /// the module file in it) in place.
    pub fn keep_remote_files(mut self, on: bool) -> Self {
        self.keep_remote_files = on;
        self
    }

    /// Variables a `template` task renders with (host vars, facts, ...:
    /// whatever the play would have in scope). `package` and `service`
    /// read `ansible_package_use` and `ansible_facts.pkg_mgr` /
    /// `ansible_facts.service_mgr` here to pick their backend; without
    /// them they run `setup` for that fact first, as ansible-core does.
    pub fn vars(mut self, vars: Map<String, Value>) -> Self {
        self.vars = vars;
        self
    }

    /// What a `template` task's file sees beyond [`Task::vars`] and the
    /// crate's filters and tests: the caller's globals, variables resolved
    /// on access and search paths (the play layer's
    /// `mitogen_play::template::PlayHook` gives lookups,
    /// `hostvars` and lazily templated variables). See
    /// [`TemplateHook`](crate::jinja::TemplateHook).
    pub fn template_hook(mut self, hook: Arc<dyn crate::jinja::TemplateHook>) -> Self {
        self.template_hook = Some(hook);
        self
    }

    /// The module arguments: a JSON object, or a string for free-form
    /// actions (`command`, `shell`, `raw`: becomes `_raw_params`).
    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    /// `check_mode:`.
    pub fn check_mode(mut self, on: bool) -> Self {
        self.check_mode = on;
        self
    }

    /// `diff:`.
    pub fn diff(mut self, on: bool) -> Self {
        self.diff = on;
        self
    }

    /// `no_log:`.
    pub fn no_log(mut self, on: bool) -> Self {
        self.no_log = on;
        self
    }

    /// Adds an `environment:` variable (later ones win).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.retain(|(k, _)| k != key);
        self.environment.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `ansible_python_module_rlimit_nofile`: a Python module runs with
    /// its soft `RLIMIT_NOFILE` set to this (at most the hard limit), as
    /// ansible-core's AnsiballZ wrapper sets it. `0` (the default): as
    /// inherited.
    pub fn rlimit_nofile(mut self, n: u64) -> Self {
        self.rlimit_nofile = n;
        self
    }

    /// Kills the module (and its process group) after this long; the task
    /// then fails. Default one hour.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// How the controller reaches a target, where that changes results
/// (ansible-core's `local` vs `ssh` connection plugins).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Connection {
    /// `ansible_connection=local`: separate stdout/stderr, controller's cwd.
    Local,
    /// `ansible_connection=ssh` to this host: the login dir as cwd.
    Ssh {
        /// The host name ssh was given (it shows in ssh's own messages).
        host: String,
    },
}

/// A host as a task sees it: the context, its inventory name, its
/// connection kind and the interpreter variables.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) context: Context,
    pub(crate) inventory_name: String,
    pub(crate) connection: Connection,
    pub(crate) python: String,
    pub(crate) interpreters: HashMap<String, String>,
    pub(crate) become_unprivileged: bool,
    pub(crate) escalated: bool,
    pub(crate) login_user: Option<String>,
    pub(crate) pipelining: bool,
    pub(crate) discovery_fact: bool,
    pub(crate) local_dir: Option<String>,
}

impl Target {
    /// `context` named `inventory_name` in messages, local connection
    /// semantics, `ansible_python_interpreter=auto`.
    pub fn new(context: &Context, inventory_name: &str) -> Self {
        Self {
            context: context.clone(),
            inventory_name: inventory_name.to_owned(),
            connection: Connection::Local,
            python: "auto".into(),
            interpreters: HashMap::new(),
            become_unprivileged: false,
            escalated: false,
            login_user: None,
            pipelining: false,
            discovery_fact: true,
            local_dir: None,
        }
    }

    /// The directory a module runs in on the local connection: ansible-core
    /// uses the task's base directory (the playbook's), not where the
    /// controller was started. Default: the controller's working directory.
    /// (Over ssh a module runs in the login's working directory, its home,
    /// become or not, as under ansible-core.)
    pub fn local_dir(mut self, dir: impl Into<String>) -> Self {
        self.local_dir = Some(dir.into());
        self
    }

    /// Whether an interpreter discovered for this task is reported as
    /// `ansible_facts.discovered_interpreter_python` (default: yes).
    /// ansible-core leaves it out of a delegated task's result unless the
    /// task has `delegate_facts`; the warning stays, and the next task on
    /// this context discovers (and warns) again, as there.
    pub fn discovery_fact(mut self, on: bool) -> Self {
        self.discovery_fact = on;
        self
    }

    /// `ansible_pipelining`: over ssh, module output is then not merged
    /// through a tty (`-tt` is only used without stdin data).
    pub fn pipelining(mut self, on: bool) -> Self {
        self.pipelining = on;
        self
    }

    /// The connection kind whose artefacts results should show.
    pub fn connection(mut self, c: Connection) -> Self {
        self.connection = c;
        self
    }

    /// `ansible_python_interpreter`: `auto`, `auto_silent` or a path.
    pub fn python_interpreter(mut self, v: &str) -> Self {
        self.python = v.to_owned();
        self
    }

    /// `ansible_<name>_interpreter` (e.g. `perl`, `/usr/bin/perl`).
    pub fn interpreter(mut self, name: &str, path: &str) -> Self {
        self.interpreters.insert(name.to_owned(), path.to_owned());
        self
    }

    /// The context is a become to a user other than root and the login
    /// user (`_ansible_tmpdir` is then `null`, as ansible-core sends it).
    pub fn become_unprivileged(mut self, on: bool) -> Self {
        self.become_unprivileged = on;
        self.escalated |= on;
        self
    }

    /// The context is a become (sudo, su) from `login_user` (the ssh
    /// user): as under ansible-core, the task's remote tmp dir then goes
    /// under the login user's `~/.ansible/tmp` and belongs to them (become
    /// to root; see [`Target::become_unprivileged`] for other users), and
    /// `fetch` reads files with `slurp` instead of a remote `stat`.
    pub fn become_from(mut self, login_user: &str) -> Self {
        self.escalated = true;
        self.login_user = Some(login_user.to_owned());
        self
    }
}

impl From<&Context> for Target {
    fn from(c: &Context) -> Self {
        let mut t = Self::new(c, c.name());
        if let Some(host) = c.name().strip_prefix("ssh.") {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            t.connection = Connection::Ssh {
                host: host.to_owned(),
            };
        }
        t
    }
}

/// What a task produced.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// The callback event.
    pub status: Status,
    /// The dict a callback plugin gets (`v2_runner_on_*`'s `result._result`).
    pub result: Value,
    /// The dict `register:` stores (internal keys and `invocation` gone,
    /// as ansible-core's strategy stores it).
    pub register: Value,
    /// Where the task's time went (diagnostics: benchmarks, slow tasks).
    pub timings: Timings,
}

/// Where a task's time went, summed over the module runs of its action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// The whole [`Runner::run`](crate::Runner::run).
    pub total: Duration,
    /// Calls to the target, from send to reply (includes the next three).
    pub calls: Duration,
    /// Number of calls to the target.
    pub round_trips: u32,
    /// Inside the agent's functions (cache, tmp dir, fork server wait).
    pub agent: Duration,
    /// Module processes from fork to exit (the module's own run).
    pub module: Duration,
}
