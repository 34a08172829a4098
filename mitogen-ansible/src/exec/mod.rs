//! The execution primitives the actions are built from (ansible-core's
//! `ActionBase`): [`Engine`] (what is known per target), [`Act`] (one
//! task's action state: result being shaped, tmp dir, timings), running a
//! module ([`Engine::exec_module`]), interpreter discovery, the transport's
//! view of output. Nothing here knows an action: `action/` uses this, never
//! the other way round.

mod async_wrap;
mod module;
mod python;

pub(crate) use async_wrap::ASYNC_DIR;

use crate::agent::FileRef;
use crate::agent::{MakeTmp, RawRun, RemoveTmp, TmpMode, TmpSpec};
use crate::error::Error;
use crate::pycompat::shlex_quote;
use crate::result::{self, Shaping};
use crate::source::{Module, ModuleSource, PayloadFile};
use crate::task::{Connection, Target, Task, Timings};
use mitogen_core::ContextId;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const REMOTE_TMP: &str = "~/.ansible/tmp";
/// Slack on top of a task's timeout for the call carrying it.
pub(crate) const CALL_SLACK: Duration = Duration::from_secs(30);

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

/// A module's payload, worked out once (see `Engine::payloads`).
type PayloadSlot = Arc<Mutex<Option<Arc<Prepared>>>>;

/// What the actions run against: the module source, the local dirs and
/// what is known per target context (interpreters, payload files there).
/// [`Runner`](crate::Runner) is the public face of one.
pub(crate) struct Engine {
    pub(crate) source: ModuleSource,
    /// `ANSIBLE_LOCAL_TEMP`.
    pub(crate) local_tmp: PathBuf,
    /// The playbook dir (`_find_needle`'s base); `None`: the current dir.
    pub(crate) base_dir: Option<PathBuf>,
    /// The payload cache tree's name on targets.
    tree: String,
    /// Modules found by name, with the file's (mtime, size) when found.
    modules: Mutex<HashMap<String, (Module, Option<FileStamp>)>>,
    /// One slot per module: the first task to need a payload computes it
    /// while the others wait on the slot (one finder run, not one per host).
    payloads: Mutex<HashMap<String, PayloadSlot>>,
    contexts: Mutex<HashMap<ContextId, ContextState>>,
}

impl Engine {
    /// An engine using `source` for modules.
    pub(crate) fn new(source: ModuleSource) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{}\0{}", source.ansible_dir().display(), source.version()).bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            tree: format!("{}-{h:016x}", source.version()),
            local_tmp: default_local_tmp(),
            base_dir: None,
            source,
            modules: Mutex::new(HashMap::new()),
            payloads: Mutex::new(HashMap::new()),
            contexts: Mutex::new(HashMap::new()),
        }
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

/// How long making or removing a tmp dir may take.
const TMP_CALL: Duration = Duration::from_secs(60);

/// One task's action state.
pub(crate) struct Act<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) target: &'a Target,
    pub(crate) task: &'a Task,
    pub(crate) s: Shaping,
    /// The action's tmp dir on the target (with its `/`), once made.
    pub(crate) tmp: Option<String>,
    /// A module result asked to leave the tmp dir (async_wrapper's
    /// `_ansible_suppress_tmpdir_delete`).
    pub(crate) keep_tmp: bool,
    /// `TRANSFERS_FILES`: the first module call makes the action's tmp
    /// dir and keeps it (no round trip of its own).
    pub(crate) want_tmp: bool,
    /// The next module call is the action's last use of its tmp dir: it
    /// removes it afterwards (no round trip of its own).
    pub(crate) last_tmp_use: bool,
    pub(crate) timings: Timings,
}

impl<'a> Act<'a> {
    pub(crate) fn new(engine: &'a Engine, target: &'a Target, task: &'a Task) -> Self {
        Self {
            engine,
            target,
            task,
            s: Shaping::default(),
            tmp: None,
            keep_tmp: false,
            want_tmp: false,
            last_tmp_use: false,
            timings: Timings::default(),
        }
    }

    /// A call to the target, counted in the task's [`Timings`].
    pub(crate) fn call<F: mitogen_core::Function>(
        &mut self,
        args: &F::Args,
        timeout: Duration,
    ) -> Result<F::Output, mitogen_core::CallError> {
        let t = std::time::Instant::now();
        let r = self.target.context.call_timeout::<F>(args, timeout);
        self.timings.calls += t.elapsed();
        self.timings.round_trips += 1;
        r
    }

    /// Adds a module run's target-side times.
    pub(crate) fn ran(&mut self, run: &RawRun) {
        self.timings.agent += Duration::from_micros(run.agent_us);
        self.timings.module += Duration::from_micros(run.child_us);
    }

    /// Where a module call's files go: the action's dir if it made one,
    /// else a fresh dir for the call.
    pub(crate) fn tmp_mode(&mut self) -> TmpMode {
        match &self.tmp {
            Some(p) => {
                let remove = std::mem::take(&mut self.last_tmp_use)
                    && !self.keep_tmp
                    && !self.task.keep_remote_files;
                let path = p.clone();
                if remove {
                    self.tmp = None;
                }
                TmpMode::Shared { path, remove }
            }
            None => {
                let mut spec = self.tmp_spec();
                spec.keep |= self.want_tmp;
                TmpMode::Fresh(spec)
            }
        }
    }

    /// Takes the tmp dir a module call made and kept (see `want_tmp`).
    pub(crate) fn adopt_tmp(&mut self, run: &RawRun) {
        if self.tmp.is_none() && self.want_tmp {
            self.tmp.clone_from(&run.tmp);
        }
    }

    pub(crate) fn tmp_spec(&self) -> TmpSpec {
        TmpSpec {
            remote_tmp: REMOTE_TMP.into(),
            system: self.target.become_unprivileged,
            keep: self.task.keep_remote_files,
            login_user: self.target.login_user.clone(),
        }
    }

    /// `_make_tmp_path` (once per action): the dir's path with its `/`.
    pub(crate) fn make_tmp(&mut self) -> Result<String, Error> {
        if let Some(t) = &self.tmp {
            return Ok(t.clone());
        }
        let spec = self.tmp_spec();
        let t = self.call::<MakeTmp>(&spec, TMP_CALL)?;
        self.tmp = Some(t.clone());
        Ok(t)
    }

    /// `_remove_tmp_path` at the end of the action, unless kept.
    pub(crate) fn cleanup(&mut self) -> Result<(), Error> {
        let Some(t) = self.tmp.take() else {
            return Ok(());
        };
        if self.keep_tmp || self.task.keep_remote_files {
            return Ok(());
        }
        match self.call::<RemoveTmp>(&t, TMP_CALL) {
            Ok(()) => Ok(()),
            Err(e) if e.kind.is_disconnected() => Err(e.into()),
            Err(e) => {
                self.s.warnings.push(format!(
                    "Error deleting remote temporary files (rc: 1, stderr: {e}}})"
                ));
                Ok(())
            }
        }
    }

    /// The task's args as an object (free-form strings as `_raw_params`).
    pub(crate) fn args(&self) -> Result<Map<String, Value>, Error> {
        task_args(self.task)
    }

    /// `_find_needle(dirname, needle)`: absolute as is, else the first of
    /// `<base>/<dirname>/<needle>` and `<base>/<needle>` that exists.
    /// The task's [`TemplateHook`](crate::jinja::TemplateHook) decides
    /// where, when it knows (a play's role and task file paths).
    pub(crate) fn find_needle(&self, dirname: &str, needle: &str) -> Result<PathBuf, String> {
        let found = match self
            .task
            .template_hook
            .as_ref()
            .and_then(|h| h.find_needle(dirname, needle))
        {
            Some(r) => r,
            None => self.find_in_base(dirname, needle),
        };
        let tried = match found {
            Ok(p) => {
                let mut s = p.display().to_string();
                if needle.ends_with('/') && !s.ends_with('/') {
                    s.push('/');
                }
                return Ok(PathBuf::from(s));
            }
            Err(tried) => tried,
        };
        let searched: String = tried
            .iter()
            .map(|p| format!("\n\t{}", p.display()))
            .collect();
        Err(format!(
            "Could not find or access '{needle}'{}{searched} on the Ansible Controller.\nIf you are using a module and expect the file to exist on the remote, see the remote_src option",
            if tried.is_empty() {
                ""
            } else {
                "\nSearched in:"
            },
        ))
    }

    /// `<base>/<dirname>/<needle>`, then `<base>/<needle>` (an absolute
    /// `needle` as it is).
    fn find_in_base(&self, dirname: &str, needle: &str) -> Result<PathBuf, Vec<PathBuf>> {
        let p = Path::new(needle);
        if p.is_absolute() {
            return if p.exists() {
                Ok(p.to_owned())
            } else {
                Err(Vec::new())
            };
        }
        let base = self
            .engine
            .base_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let tried = vec![base.join(dirname).join(needle), base.join(needle)];
        match tried.iter().find(|c| c.exists()) {
            Some(c) => Ok(c.clone()),
            None => Err(tried),
        }
    }
}

/// `ANSIBLE_LOCAL_TEMP`'s default.
pub(crate) fn default_local_tmp() -> PathBuf {
    std::env::var_os("ANSIBLE_LOCAL_TEMP")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ansible/tmp")))
        .unwrap_or_else(|| std::env::temp_dir().join("ansible-local"))
}

/// A module file's (mtime, size) when it was read.
type FileStamp = (std::time::SystemTime, u64);

/// How [`Engine::exec_module`] runs a module.
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
