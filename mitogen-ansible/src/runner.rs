//! The controller side: [`Runner`], [`Task`], [`Target`], the action
//! layer (normal, command, shell, raw) and interpreter discovery.

use crate::action::Act;
use crate::agent::{
    Discover, FileKind, FileRef, ProcTask, PyOutcome, PyTask, RawRun, RunProcess, RunPython, Stage,
    StageOutcome, StageReq, TMPDIR_TOKEN, TmpMode,
};
use crate::args::{self, Internal};
use crate::error::Error;
use crate::pycompat::{shlex_join, shlex_quote};
use crate::result::{self, Shaping, Status};
use crate::source::{Module, ModuleSource, PayloadFile, Style, extract_interpreter};
use mitogen_core::{CallError, Context, ContextId};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// ansible-core's `INTERPRETER_PYTHON_FALLBACK`.
const PYTHON_FALLBACK: [&str; 8] = [
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "/usr/bin/python3",
    "python3",
];
pub(crate) const REMOTE_TMP: &str = "~/.ansible/tmp";
/// ansible-core action plugins not reimplemented yet: running their module
/// bare would not give ansible-core's result, so they are refused.
pub(crate) const UNSUPPORTED_ACTIONS: &[&str] = &[
    "add_host",
    "assemble",
    "assert",
    "debug",
    "dnf",
    "fail",
    "gather_facts",
    "group_by",
    "include_vars",
    "pause",
    "reboot",
    "set_fact",
    "set_stats",
    "unarchive",
    "uri",
    "validate_argument_spec",
    "wait_for_connection",
];
/// Slack on top of a task's timeout for the call carrying it.
pub(crate) const CALL_SLACK: Duration = Duration::from_secs(30);

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
    /// The whole [`Runner::run`].
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

struct Prepared {
    files: Vec<FileRef>,
    sources: HashMap<String, PayloadFile>,
}

#[derive(Default)]
struct ContextState {
    python: Option<String>,
    /// A task that reported the discovered interpreter ended ok: ansible-core
    /// then has it as a host fact and stops re-reporting it.
    python_fact_saved: bool,
    /// Interpreters a module ran under here (its output was JSON).
    python_ran: HashSet<String>,
    blobs: HashSet<String>,
}

/// A module's payload, worked out once (see `Runner::payloads`).
type PayloadSlot = Arc<Mutex<Option<Arc<Prepared>>>>;

/// Runs tasks on targets with ansible-core's semantics.
pub struct Runner {
    pub(crate) source: ModuleSource,
    pub(crate) local_tmp: std::path::PathBuf,
    pub(crate) base_dir: Option<std::path::PathBuf>,
    tree: String,
    /// Modules found by name, with the file's (mtime, size) when found.
    modules: Mutex<HashMap<String, (Module, Option<FileStamp>)>>,
    /// One slot per module: the first task to need a payload computes it
    /// while the others wait on the slot (one finder run, not one per host).
    payloads: Mutex<HashMap<String, PayloadSlot>>,
    contexts: Mutex<HashMap<ContextId, ContextState>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Where this runner takes modules from (and which ansible-core).
    pub fn source(&self) -> &ModuleSource {
        &self.source
    }

    /// A runner using `source` for modules.
    pub fn new(source: ModuleSource) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{}\0{}", source.ansible_dir().display(), source.version()).bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            tree: format!("{}-{h:016x}", source.version()),
            local_tmp: crate::action::default_local_tmp(),
            base_dir: None,
            source,
            modules: Mutex::new(HashMap::new()),
            payloads: Mutex::new(HashMap::new()),
            contexts: Mutex::new(HashMap::new()),
        }
    }

    /// `ANSIBLE_LOCAL_TEMP` (default `~/.ansible/tmp`): where `copy
    /// content=` and `template` put the files they render.
    pub fn local_tmp(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.local_tmp = dir.into();
        self
    }

    /// The playbook dir: relative `src` of `copy`, `template` and `script`
    /// is looked up in its `files/` or `templates/` and in it (the search
    /// path of `_find_needle`); default the current dir.
    pub fn base_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// [`ModuleSource::find`], remembered per name while the file's mtime
    /// and size stay the same (one `stat` instead of a search and a read).
    pub(crate) fn find(&self, name: &str) -> Result<Module, Error> {
        let stamp = |m: &Module| {
            m.path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|md| Some((md.modified().ok()?, md.len())))
        };
        if let Some((m, st)) = self.modules.lock().get(name) {
            if m.path.is_none() || stamp(m) == *st {
                return Ok(m.clone());
            }
        }
        let m = self.source.find(name)?;
        let st = stamp(&m);
        self.modules.lock().insert(name.to_owned(), (m.clone(), st));
        Ok(m)
    }

    /// Links `module`'s payload into this runner's tree on `target` and
    /// returns the tree's path there (for modules run as processes).
    pub(crate) fn stage(&self, target: &Target, module: &Module) -> Result<String, Error> {
        let prepared = self.prepared(module)?;
        let id = target.context.id();
        let known: HashSet<String> = self
            .contexts
            .lock()
            .get(&id)
            .map(|c| c.blobs.clone())
            .unwrap_or_default();
        let mut want: Vec<String> = prepared
            .files
            .iter()
            .map(|f| f.sha256.clone())
            .filter(|h| !known.contains(h))
            .collect();
        for _attempt in 0..2 {
            let mut blobs = Vec::new();
            for h in &want {
                if let Some(src) = prepared.sources.get(h) {
                    blobs.push((h.clone(), read_source(src)?));
                }
            }
            let req = StageReq {
                tree: self.tree.clone(),
                files: prepared.files.clone(),
                blobs,
            };
            match target
                .context
                .call_timeout::<Stage>(&req, Duration::from_secs(300))?
            {
                StageOutcome::Ready(tree) => {
                    let mut ctx = self.contexts.lock();
                    ctx.entry(id)
                        .or_default()
                        .blobs
                        .extend(prepared.files.iter().map(|f| f.sha256.clone()));
                    return Ok(tree);
                }
                StageOutcome::NeedBlobs(missing) => want = missing,
            }
        }
        Err(Error::ModuleUtils {
            module: module.name.clone(),
            message: "the target kept asking for payload files it was sent".into(),
        })
    }

    /// Runs `task` on `target` and shapes the result as ansible-core does.
    ///
    /// A lost connection is `Ok` with [`Status::Unreachable`]; module
    /// failures are `Ok` with [`Status::Failed`].
    ///
    /// # Errors
    /// Unknown modules, missing module_utils, and calls that failed on the
    /// target other than by disconnection.
    pub fn run(&self, target: impl Into<Target>, task: &Task) -> Result<TaskResult, Error> {
        let started = std::time::Instant::now();
        let target = target.into();
        let mut act = Act::new(self, &target, task);
        let outcome = crate::action::run(&mut act);
        let cleanup = act.cleanup();
        match outcome.and(cleanup) {
            Ok(()) => {}
            Err(Error::Call(e)) if e.kind.is_disconnected() => return Ok(unreachable(&e)),
            Err(e) => return Err(e),
        }
        let mut timings = act.timings;
        let mut s = act.s;
        if !target.discovery_fact {
            if let Some(Value::Object(f)) = s.data.get_mut("ansible_facts") {
                f.shift_remove("discovered_interpreter_python");
                if f.is_empty() {
                    s.data.shift_remove("ansible_facts");
                }
            }
        }
        let reported = s
            .data
            .get("ansible_facts")
            .and_then(|f| f.get("discovered_interpreter_python"))
            .is_some();
        let (status, register, result) = result::finish(s, task.no_log);
        if reported && matches!(status, Status::Ok | Status::Changed) {
            if let Some(c) = self.contexts.lock().get_mut(&target.context.id()) {
                c.python_fact_saved = true;
            }
        }
        timings.total = started.elapsed();
        Ok(TaskResult {
            status,
            result,
            register,
            timings,
        })
    }

    pub(crate) fn raw(&self, act: &mut Act<'_>) -> Result<(), Error> {
        let (target, task) = (act.target, act.task);
        if !task.environment.is_empty() {
            act.s
                .warnings
                .push("raw module does not support the environment keyword".into());
        }
        let (cmd, executable) = match &task.args {
            Value::String(c) => (c.clone(), None),
            Value::Object(o) => (
                o.get("_raw_params")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                o.get("executable")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            ),
            other => (other.to_string(), None),
        };
        if task.check_mode {
            act.s.data.insert("skipped".into(), true.into());
            return Ok(());
        }
        let command = match executable {
            Some(e) => format!("{e} -c {}", shlex_quote(&cmd)),
            None => cmd,
        };
        let run = act.call::<RunProcess>(
            &ProcTask {
                files: Vec::new(),
                command,
                tmp: None,
                env: Vec::new(),
                cwd: self.cwd(target),
                timeout_ms: millis(task.timeout),
            },
            task.timeout + CALL_SLACK,
        )?;
        let run = self.transport_view(target, run);
        act.s.data = raw_result(&run);
        Ok(())
    }

    pub(crate) fn command(&self, act: &mut Act<'_>) -> Result<(), Error> {
        let mut a = task_args(act.task)?;
        if short_action(&act.task.name) == "shell" {
            a.insert("_uses_shell".into(), true.into());
        }
        self.normal(act, "ansible.legacy.command", a)
    }

    /// The normal action: one module, its result is the task's.
    pub(crate) fn normal(
        &self,
        act: &mut Act<'_>,
        name: &str,
        user_args: Map<String, Value>,
    ) -> Result<(), Error> {
        let opts = Exec {
            wrap_async: act.task.async_limit > 0,
            ..Exec::default()
        };
        act.s.data = self.exec_module(act, name, user_args, &opts)?;
        Ok(())
    }

    /// `ActionBase._execute_module`: runs module `name` with `user_args`
    /// in the action's tmp dir (or a fresh one per call) and returns its
    /// parsed, post-processed data. Warnings go to the action's list.
    pub(crate) fn exec_module(
        &self,
        act: &mut Act<'_>,
        name: &str,
        user_args: Map<String, Value>,
        opts: &Exec,
    ) -> Result<Map<String, Value>, Error> {
        let saved = std::mem::take(&mut act.s.data);
        let r = self.exec_module_into(act, name, user_args, opts);
        let data = std::mem::replace(&mut act.s.data, saved);
        r.map(|()| data)
    }

    fn exec_module_into(
        &self,
        act: &mut Act<'_>,
        name: &str,
        user_args: Map<String, Value>,
        opts: &Exec,
    ) -> Result<(), Error> {
        let (target, task) = (act.target, act.task);
        let module = self.find(name)?;
        if opts.wrap_async {
            return crate::action::async_job::start(self, act, &module, name, user_args);
        }
        let tmpdir = (!target.become_unprivileged).then_some(TMPDIR_TOKEN);
        let internal = Internal {
            check_mode: task.check_mode,
            no_log: task.no_log,
            diff: task.diff,
            version: self.source.version(),
            module_name: name,
            tmpdir,
            remote_tmp: REMOTE_TMP,
            keep_remote_files: task.keep_remote_files,
            ignore_unknown_opts: opts.ignore_unknown_opts,
        };
        let margs = args::with_internal(&user_args, &internal);
        let env_string = env_string(task);
        let tmp_mode = act.tmp_mode();
        match module.style {
            Style::NewPython => {
                let (python, discovered) = self.python(target, &mut act.s)?;
                let t = std::time::Instant::now();
                let run = self.run_python(target, task, &module, &python, &margs, tmp_mode)?;
                act.timings.calls += t.elapsed();
                act.timings.round_trips += 1;
                act.ran(&run);
                act.adopt_tmp(&run);
                let run = self.module_transport_view(target, run);
                result::parse(&run, Some(&python), &mut act.s);
                if act.s.data.get("_ansible_parsed") == Some(&Value::Bool(true)) {
                    let mut c = self.contexts.lock();
                    let c = c.entry(target.context.id()).or_default();
                    if !c.python_ran.contains(&python) {
                        c.python_ran.insert(python.clone());
                    }
                }
                result::after_module(&mut act.s, discovered.as_deref());
            }
            Style::PowerShell => {
                act.s.data = failure(&format!(
                    "module ({}) is a PowerShell module: Windows targets are not supported",
                    module.name
                ));
            }
            style => {
                let Some((files, cmd, interp, discovered)) =
                    self.process_module(act, &module, style, &margs)?
                else {
                    return Ok(());
                };
                let mut cmd = cmd;
                if !env_string.is_empty() {
                    cmd = format!("{env_string} {cmd}");
                }
                let run = act.call::<RunProcess>(
                    &ProcTask {
                        files,
                        command: format!("{cmd} && sleep 0"),
                        tmp: Some(tmp_mode),
                        env: Vec::new(),
                        cwd: self.cwd(target),
                        timeout_ms: millis(task.timeout),
                    },
                    task.timeout + CALL_SLACK,
                )?;
                act.ran(&run);
                act.adopt_tmp(&run);
                let run = self.transport_view(target, run);
                result::parse(&run, interp.as_deref(), &mut act.s);
                result::after_module(&mut act.s, discovered.as_deref());
            }
        }
        if act
            .s
            .data
            .shift_remove("_ansible_suppress_tmpdir_delete")
            .is_some()
        {
            act.keep_tmp = true;
        }
        Ok(())
    }

    /// The files and command of a module run as its own process
    /// (`None`: the action failed, `act.s.data` says why). Commands are
    /// built as `build_module_command`: `shlex.join([interp, module, args])`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn process_module(
        &self,
        act: &mut Act<'_>,
        module: &Module,
        style: Style,
        margs: &Map<String, Value>,
    ) -> Result<
        Option<(
            Vec<(String, Vec<u8>, FileKind)>,
            String,
            Option<String>,
            Option<String>,
        )>,
        Error,
    > {
        let target = act.target;
        let remote = module.remote_name();
        let (mut data, shebang, discovered) = if style == Style::Binary {
            ((*module.data).clone(), None, None)
        } else {
            let Some((interp, iargs)) = extract_interpreter(&module.data) else {
                act.s.data = failure(&format!(
                    "module ({}) is missing interpreter line",
                    module.name
                ));
                return Ok(None);
            };
            let (new, discovered) = self.shebang_interpreter(target, &interp, &mut act.s)?;
            let mut shebang = format!("#!{new}");
            if !iargs.is_empty() {
                shebang = format!("{shebang} {}", iargs.join(" "));
            }
            let mut data = (*module.data).clone();
            if new != interp {
                let rest = data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(Vec::new(), |i| data[i..].to_vec());
                data = shebang.clone().into_bytes();
                data.extend_from_slice(&rest);
            }
            (data, Some(shebang), discovered)
        };
        let mut files = Vec::new();
        let mut arg_path = None;
        match style {
            Style::JsonArgs => {
                data = args::jsonargs_source(&data, margs, self.source.version());
                files.push((remote.clone(), data, FileKind::Templated));
            }
            _ => {
                files.push((remote.clone(), data, FileKind::Plain));
                let text = if style == Style::Old {
                    args::old_style_file(margs)
                } else {
                    args::json_file(margs)
                };
                files.push(("args".into(), text.into_bytes(), FileKind::Templated));
                arg_path = Some(format!("{TMPDIR_TOKEN}args"));
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(sb) = &shebang {
            parts.push(sb.trim_start_matches("#!").trim().to_owned());
        }
        parts.push(format!("{TMPDIR_TOKEN}{remote}"));
        parts.extend(arg_path);
        let interp = shebang
            .as_deref()
            .map(|s| s.trim_start_matches("#!").trim().to_owned());
        Ok(Some((files, shlex_join(&parts), interp, discovered)))
    }

    /// The interpreter for a `#!` interpreter: python via discovery or
    /// `ansible_python_interpreter`, others via `ansible_<x>_interpreter`.
    pub(crate) fn shebang_interpreter(
        &self,
        target: &Target,
        interp: &str,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        let base = interp.rsplit('/').next().unwrap_or(interp).trim();
        if base == "python" {
            return self.python(target, s);
        }
        Ok((
            target
                .interpreters
                .get(base)
                .cloned()
                .unwrap_or_else(|| interp.to_owned()),
            None,
        ))
    }

    /// `_execute_remote_stat`'s answer computed by the agent instead of a
    /// run of the `stat` module (one round trip, no fork, no `file` or
    /// `lsattr` processes), when that cannot change the task's result: the
    /// module is ansible-core's own (not a `library/stat.py`), and the
    /// interpreter it would run under is settled (no discovery to run or
    /// report in this task) and has run a module on this context. `None`:
    /// run the module (also for whatever [`crate::agent::QuickStat`] leaves
    /// to it).
    pub(crate) fn quick_stat(
        &self,
        act: &mut Act<'_>,
        path: &str,
        follow: bool,
        checksum: bool,
    ) -> Result<Option<crate::agent::QuickStatOut>, Error> {
        let target = act.target;
        if self.find("ansible.legacy.stat")?.fqn != "ansible.modules.stat" {
            return Ok(None);
        }
        let settled = {
            let contexts = self.contexts.lock();
            let Some(c) = contexts.get(&target.context.id()) else {
                return Ok(None);
            };
            let python = match &act.s.python {
                Some((p, _)) => Some(p.as_str()),
                None if is_auto(&target.python) => {
                    c.python.as_deref().filter(|_| c.python_fact_saved)
                }
                None => Some(target.python.as_str()),
            };
            python.is_some_and(|p| c.python_ran.contains(p))
        };
        if !settled {
            return Ok(None);
        }
        let req = crate::agent::StatReq {
            path: path.to_owned(),
            follow,
            checksum,
        };
        let t = std::time::Instant::now();
        let out = target
            .context
            .call_timeout::<crate::agent::QuickStat>(&req, Duration::from_secs(90))?;
        act.timings.calls += t.elapsed();
        act.timings.round_trips += 1;
        Ok(out)
    }

    /// The python interpreter for `target`, discovering it once per context;
    /// the second value is set when it was discovered (for the fact).
    pub(crate) fn python(
        &self,
        target: &Target,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        if let Some(p) = &s.python {
            return Ok(p.clone());
        }
        let p = self.resolve_python(target, s)?;
        s.python = Some(p.clone());
        Ok(p)
    }

    fn resolve_python(
        &self,
        target: &Target,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        let mode = target.python.as_str();
        if !is_auto(mode) {
            return Ok((mode.to_owned(), None));
        }
        let id = target.context.id();
        let (known, saved) = self
            .contexts
            .lock()
            .get(&id)
            .map_or((None, false), |c| (c.python.clone(), c.python_fact_saved));
        if let (Some(p), true) = (&known, saved) {
            return Ok((p.clone(), None));
        }
        let found = match known {
            Some(p) => p,
            None => {
                let fallback: Vec<String> =
                    PYTHON_FALLBACK.iter().map(|s| (*s).to_owned()).collect();
                let out = target
                    .context
                    .call_timeout::<Discover>(&fallback, Duration::from_secs(90))?;
                let p = parse_discovery(&out);
                self.contexts.lock().entry(id).or_default().python = Some(p.clone());
                p
            }
        };
        if !mode.ends_with("_silent") {
            s.warnings.push(format!(
                "Host '{}' is using the discovered Python interpreter at '{found}', but future installation of another Python interpreter could cause a different interpreter to be discovered.",
                target.inventory_name
            ));
        }
        Ok((found.clone(), Some(found)))
    }

    fn prepared(&self, module: &Module) -> Result<Arc<Prepared>, Error> {
        let key = format!(
            "{}\0{}",
            module.fqn,
            module
                .path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
        let slot = self.payloads.lock().entry(key).or_default().clone();
        let mut slot = slot.lock();
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let files = self.source.payload(module)?;
        let p = Arc::new(Prepared {
            files: files
                .iter()
                .map(|f| FileRef {
                    rel: f.rel.clone(),
                    sha256: f.sha256.clone(),
                })
                .collect(),
            sources: files.into_iter().map(|f| (f.sha256.clone(), f)).collect(),
        });
        *slot = Some(p.clone());
        Ok(p)
    }

    fn run_python(
        &self,
        target: &Target,
        task: &Task,
        module: &Module,
        python: &str,
        margs: &Map<String, Value>,
        tmp: TmpMode,
    ) -> Result<RawRun, Error> {
        let prepared = self.prepared(module)?;
        let id = target.context.id();
        let known: HashSet<String> = self
            .contexts
            .lock()
            .get(&id)
            .map(|c| c.blobs.clone())
            .unwrap_or_default();
        let mut want: Vec<String> = prepared
            .files
            .iter()
            .map(|f| f.sha256.clone())
            .filter(|h| !known.contains(h))
            .collect();
        let params = json!({ "ANSIBLE_MODULE_ARGS": margs }).to_string();
        let env = task.environment.clone();
        for _attempt in 0..2 {
            let mut blobs = Vec::new();
            for h in &want {
                if let Some(src) = prepared.sources.get(h) {
                    blobs.push((h.clone(), read_source(src)?));
                }
            }
            let req = PyTask {
                interpreter: python.to_owned(),
                tree: self.tree.clone(),
                files: prepared.files.clone(),
                blobs,
                fqn: module.fqn.clone(),
                remote_name: format!("{}.py", module.remote_name().trim_end_matches(".py")),
                params: params.clone(),
                tmp: tmp.clone(),
                env: env.clone(),
                cwd: self.cwd(target),
                timeout_ms: millis(task.timeout),
                rlimit_nofile: task.rlimit_nofile,
            };
            match target
                .context
                .call_timeout::<RunPython>(&req, task.timeout + CALL_SLACK)?
            {
                PyOutcome::Ran(run) => {
                    let mut ctx = self.contexts.lock();
                    let st = ctx.entry(id).or_default();
                    st.blobs
                        .extend(prepared.files.iter().map(|f| f.sha256.clone()));
                    return Ok(run);
                }
                PyOutcome::NeedBlobs(missing) => want = missing,
            }
        }
        Err(Error::ModuleUtils {
            module: module.name.clone(),
            message: "the target kept asking for payload files it was sent".into(),
        })
    }

    pub(crate) fn cwd(&self, target: &Target) -> Option<String> {
        match target.connection {
            // ansible-core's local connection runs in the task's base dir.
            Connection::Local => target.local_dir.clone().or_else(|| {
                std::env::current_dir()
                    .ok()
                    .map(|p| p.display().to_string())
            }),
            // ssh: the login's working directory (the agent's, which a
            // become agent inherits from it).
            Connection::Ssh { .. } => None,
        }
    }

    /// A new-style module's output: through the tty unless pipelined.
    pub(crate) fn module_transport_view(&self, target: &Target, run: RawRun) -> RawRun {
        if target.pipelining {
            run
        } else {
            self.transport_view(target, run)
        }
    }

    /// Output as the connection plugin would show it: over ssh (`-tt`),
    /// stderr merged into stdout with `\r\n`, and ssh's closing message.
    pub(crate) fn transport_view(&self, target: &Target, mut run: RawRun) -> RawRun {
        if let Connection::Ssh { host } = &target.connection {
            let mut out = run.stdout;
            out.extend_from_slice(&run.stderr);
            let mut crlf = Vec::with_capacity(out.len());
            for b in out {
                if b == b'\n' {
                    crlf.extend_from_slice(b"\r\n");
                } else {
                    crlf.push(b);
                }
            }
            run.stdout = crlf;
            run.stderr = format!("Shared connection to {host} closed.\r\n").into_bytes();
        }
        run
    }
}

fn read_source(src: &PayloadFile) -> Result<Vec<u8>, Error> {
    match (&src.text, &src.path) {
        (Some(t), _) => Ok(t.clone().into_bytes()),
        (None, Some(p)) => std::fs::read(p).map_err(|e| Error::ReadModule {
            path: p.clone(),
            source: e,
        }),
        (None, None) => Ok(Vec::new()),
    }
}

/// A module file's (mtime, size) when it was read.
type FileStamp = (std::time::SystemTime, u64);

/// How [`Runner::exec_module`] runs a module.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Exec {
    /// `_ansible_ignore_unknown_opts` (internal calls such as the remote stat).
    pub(crate) ignore_unknown_opts: bool,
    /// Run under async_wrapper (the task's `async:`).
    pub(crate) wrap_async: bool,
}

/// `ShellBase.env_prefix()` of the task's `environment:`.
pub(crate) fn env_string(task: &Task) -> String {
    task.environment
        .iter()
        .map(|(k, v)| format!("{k}={}", shlex_quote(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The raw (and script) action's result from the command's output.
pub(crate) fn raw_result(run: &RawRun) -> Map<String, Value> {
    let failed = run.rc != 0;
    let mut d = Map::new();
    d.insert("rc".into(), run.rc.into());
    d.insert("stdout".into(), crate::pycompat::decode(&run.stdout).into());
    d.insert("stderr".into(), crate::pycompat::decode(&run.stderr).into());
    result::add_lines(&mut d);
    d.insert("changed".into(), true.into());
    if failed {
        d.insert("failed".into(), true.into());
        d.insert("msg".into(), "non-zero return code".into());
    }
    d
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn short_action(name: &str) -> &str {
    name.strip_prefix("ansible.builtin.")
        .or_else(|| name.strip_prefix("ansible.legacy."))
        .unwrap_or(name)
}

pub(crate) fn task_args(task: &Task) -> Result<Map<String, Value>, Error> {
    match &task.args {
        Value::Object(o) => Ok(o.clone()),
        Value::String(s) => {
            let mut m = Map::new();
            m.insert("_raw_params".into(), s.clone().into());
            Ok(m)
        }
        Value::Null => Ok(Map::new()),
        other => Err(Error::BadArgs(other.to_string())),
    }
}

/// An error the action raised (`AnsibleError`): the executor's shape.
pub(crate) fn failure(msg: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("failed".into(), true.into());
    m.insert("msg".into(), format!("Task failed: {msg}").into());
    m.insert("exception".into(), result::NO_TRACEBACK.into());
    m
}

/// `interpreter_python` values that discover.
fn is_auto(mode: &str) -> bool {
    matches!(
        mode,
        "auto" | "auto_silent" | "auto_legacy" | "auto_legacy_silent" | ""
    )
}

/// The discovery command's answer: the first line starting with `/`
/// between `FOUND` and `ENDFOUND`, else `/usr/bin/python3`.
fn parse_discovery(out: &str) -> String {
    out.lines()
        .skip_while(|l| l.trim() != "FOUND")
        .skip(1)
        .take_while(|l| l.trim() != "ENDFOUND")
        .find(|l| l.starts_with('/'))
        .map_or_else(|| "/usr/bin/python3".to_owned(), |l| l.trim().to_owned())
}

fn unreachable(e: &CallError) -> TaskResult {
    let msg = format!("Failed to reach the target: {e}");
    let v = json!({"unreachable": true, "msg": msg, "changed": false});
    TaskResult {
        status: Status::Unreachable,
        result: v.clone(),
        register: v,
        timings: Timings::default(),
    }
}
