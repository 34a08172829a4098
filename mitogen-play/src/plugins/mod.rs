//! The plugin host: one warm Python on the controller (the interpreter
//! and ansible-core modules come from), started lazily by the first
//! playbook that needs it, that serves filter, test and lookup plugins
//! mitogen-play does not implement natively through ansible-core's own
//! plugin loader: ansible-core's builtin ones, any installed collection's
//! (`ansible` package collections, `collections_path`, a playbook-adjacent
//! `collections/`), and `filter_plugins/`, `test_plugins/`,
//! `lookup_plugins/` next to a playbook or in a role, found and routed as
//! ansible-core finds and routes them (`ansible_builtin_runtime.yml`,
//! `meta/runtime.yml`).
//!
//! ```text
//!  Templar (minijinja)                       plugin host (python -c host.py)
//!  ───────────────────                       ───────────────────────────────
//!  {{ x | to_nice_yaml }}
//!   └ native filter? no ─ resolve ──────────► filter_loader.get(name)
//!     proxy registered  ◄── found, fqcn ─────
//!   └ proxy(value, args, kwargs) ─ call ─────► j2_function(value, *args, **kw)
//!                         ◄── value (JSON) ── or the plugin's exception
//!  lookup('x', ...)  ─────────── lookup ─────► lookup_loader.get(x).run(terms,
//!                                                variables=task vars)
//! ```
//!
//! Frames are a 4-byte big-endian length and UTF-8 JSON; the host answers
//! on a private copy of its stdout and points its stdout at stderr, so a
//! plugin that prints cannot break the protocol. Every call has a deadline
//! ([`PluginHost::timeout`]): a plugin that hangs is killed with its host,
//! and the next call starts a fresh one. A run that needs no plugin never
//! starts Python.

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The host's program (run as `python -c`).
const HOST_PY: &str = include_str!("host.py");

/// Longest a frame may be (a lookup's variables included).
const MAX_FRAME: usize = 256 << 20;

/// A kind of plugin the host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Jinja filter plugins.
    Filter,
    /// Jinja test plugins.
    Test,
    /// Lookup plugins.
    Lookup,
}

impl Kind {
    /// ansible-core's name for the kind (`filter`, `test`, `lookup`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Test => "test",
            Self::Lookup => "lookup",
        }
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The plugin raised: its exception's type and message.
    #[error("{message}")]
    Raised {
        /// The exception's class name (`AnsibleFilterError`, `KeyError`).
        kind: String,
        /// `str(exception)`.
        message: String,
    },
    /// The host could not be started, died, or did not answer in time.
    #[error("the plugin host ({python}): {message}")]
    Host {
        /// The interpreter it runs under.
        python: String,
        /// What went wrong.
        message: String,
    },
}

/// The running host process.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves Python filter, test and lookup plugins; see the [module
/// docs](self). Shared by every templar of a run.
pub struct PluginHost {
    python: PathBuf,
    /// Playbook directories: their `collections/` and `*_plugins/` dirs.
    playbook_dirs: Vec<PathBuf>,
    /// Roles' directories: their `*_plugins/` dirs.
    plugin_dirs: Mutex<Vec<PathBuf>>,
    proc: Mutex<Option<Proc>>,
    /// Answers to `resolve`, by kind and name: the FQCN when found.
    resolved: RwLock<HashMap<(Kind, String), Option<String>>>,
    /// Bumped whenever a name resolves as found (templars re-register).
    generation: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("python", &self.python)
            .field("running", &self.proc.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// A host that will run under `python` (with ansible-core importable),
    /// not started yet.
    ///
    /// ```
    /// let host = mitogen_play::plugins::PluginHost::new("/usr/bin/python3");
    /// assert!(!host.is_running());
    /// ```
    pub fn new(python: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            playbook_dirs: Vec::new(),
            plugin_dirs: Mutex::new(Vec::new()),
            proc: Mutex::new(None),
            resolved: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            timeout: Duration::from_secs(60),
        }
    }

    /// How long one call may take (default 60 s); a call past it kills
    /// the host.
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The playbooks' directories: their `collections/` and
    /// `filter_plugins/`, `test_plugins/`, `lookup_plugins/` count, as
    /// ansible-playbook's `AnsibleCollectionConfig.playbook_paths` and
    /// `add_all_plugin_dirs`.
    #[must_use]
    pub fn playbook_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.playbook_dirs = dirs;
        self
    }

    /// Adds a role's directory, whose `filter_plugins/`, `test_plugins/`
    /// and `lookup_plugins/` then count (ansible-core's
    /// `add_all_plugin_dirs` for a role).
    pub fn add_plugin_dir(&self, dir: &Path) {
        let dir = dir.to_owned();
        {
            let mut b = self.plugin_dirs.lock();
            if b.contains(&dir) {
                return;
            }
            b.push(dir.clone());
        }
        if self.is_running() {
            let _ = self.request(&json!({"op": "add_dirs", "dirs": [dir]}));
            // New dirs can change what names resolve to.
            self.resolved.write().retain(|_, v| v.is_some());
        }
    }

    /// Whether the Python process is up.
    pub fn is_running(&self) -> bool {
        self.proc.lock().is_some()
    }

    /// What `generation` is now: changes when a new name resolved.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Names of `kind` found so far (with the FQCN each resolves to).
    pub(crate) fn found(&self, kind: Kind) -> Vec<(String, String)> {
        self.resolved
            .read()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .filter_map(|((_, n), v)| Some((n.clone(), v.clone()?)))
            .collect()
    }

    /// Whether ansible-core has plugin `name` of `kind`; starts the host.
    ///
    /// # Errors
    /// The host could not be started or did not answer.
    pub fn resolve(&self, kind: Kind, name: &str) -> Result<Option<String>, PluginError> {
        if let Some(r) = self.resolved.read().get(&(kind, name.to_owned())) {
            return Ok(r.clone());
        }
        let v = self.request(&json!({"op": "resolve", "kind": kind.as_str(), "name": name}))?;
        let found = v
            .get("found")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then(|| {
                v.get("fqcn")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_owned()
            });
        self.resolved
            .write()
            .insert((kind, name.to_owned()), found.clone());
        if found.is_some() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(found)
    }

    /// Whether plugin `name` of `kind` is served (a host that cannot be
    /// started serves nothing).
    pub fn has(&self, kind: Kind, name: &str) -> bool {
        matches!(self.resolve(kind, name), Ok(Some(_)))
    }

    /// Calls filter or test `name` with `args` (the value first) and
    /// `kwargs`.
    ///
    /// # Errors
    /// What the plugin raised, or a host failure.
    pub fn call(
        &self,
        kind: Kind,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, PluginError> {
        self.request(&json!({
            "op": "call", "kind": kind.as_str(), "name": name, "args": args, "kwargs": kwargs,
        }))
    }

    /// Runs lookup `name` as ansible-core does: `run(terms, variables,
    /// **kwargs)` with a loader based in `basedir`.
    ///
    /// # Errors
    /// What the plugin raised, or a host failure.
    pub fn lookup(
        &self,
        name: &str,
        terms: Vec<Value>,
        kwargs: Map<String, Value>,
        variables: Map<String, Value>,
        basedir: &str,
    ) -> Result<Vec<Value>, PluginError> {
        let v = self.request(&json!({
            "op": "lookup", "name": name, "terms": terms, "kwargs": kwargs,
            "variables": variables, "basedir": basedir,
        }))?;
        Ok(match v {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            other => vec![other],
        })
    }

    fn host_error(&self, message: impl Into<String>) -> PluginError {
        PluginError::Host {
            python: self.python.display().to_string(),
            message: message.into(),
        }
    }

    /// One request and its answer, starting the host first if needed.
    fn request(&self, req: &Value) -> Result<Value, PluginError> {
        let mut guard = self.proc.lock();
        if guard.is_none() {
            *guard = Some(self.start()?);
        }
        let proc = guard
            .as_mut()
            .ok_or_else(|| self.host_error("not running"))?;
        let answer = exchange(proc, req, self.timeout);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // A host that failed a frame is in an unknown state: it goes,
                // and the next request starts a fresh one, which loads the
                // same plugins (what resolved stays resolved: the templars'
                // proxies for it stay registered).
                *guard = None;
                return Err(self.host_error(e));
            }
        };
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(answer.get("value").cloned().unwrap_or(Value::Null));
        }
        Err(PluginError::Raised {
            kind: answer
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("Exception")
                .to_owned(),
            message: answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    fn start(&self) -> Result<Proc, PluginError> {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(HOST_PY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| self.host_error(format!("cannot start it: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.host_error("no pipes to it"));
        };
        let mut proc = Proc {
            child,
            stdin,
            stdout,
        };
        let dirs = self.plugin_dirs.lock().clone();
        let init = json!({"op": "init", "playbook_dirs": self.playbook_dirs, "dirs": dirs});
        // Importing ansible-core takes a while on a loaded machine.
        let answer = exchange(&mut proc, &init, self.timeout.max(Duration::from_secs(60)))
            .map_err(|e| self.host_error(e))?;
        if answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let why = answer.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(self.host_error(format!("ansible-core's plugin loader failed: {why}")));
        }
        Ok(proc)
    }
}

/// Sends `req` and reads the answer within `timeout`.
fn exchange(proc: &mut Proc, req: &Value, timeout: Duration) -> Result<Value, String> {
    let data = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let len = u32::try_from(data.len()).map_err(|_| "request too large".to_owned())?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&data);
    proc.stdin
        .write_all(&frame)
        .and_then(|()| proc.stdin.flush())
        .map_err(|e| format!("it went away ({e})"))?;
    let deadline = Instant::now() + timeout;
    let mut head = [0u8; 4];
    read_by(&mut proc.stdout, &mut head, deadline, timeout)?;
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_FRAME {
        return Err(format!("an answer of {n} bytes (at most {MAX_FRAME})"));
    }
    let mut body = vec![0u8; n];
    read_by(&mut proc.stdout, &mut body, deadline, timeout)?;
    serde_json::from_slice(&body).map_err(|e| format!("an answer that is not JSON ({e})"))
}

/// Fills `buf` from `r`, waiting at most until `deadline`.
fn read_by(
    r: &mut ChildStdout,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {}s (stopped)", timeout.as_secs()));
        }
        let ts = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&*r, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err("it exited (see its error output above)".into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from it: {e}")),
        }
    }
    Ok(())
}

/// Adds a proxy to `host` for every filter and test it has found.
pub(crate) fn register(
    env: &mut minijinja::Environment<'static>,
    host: &std::sync::Arc<PluginHost>,
) {
    use minijinja::value::{Kwargs, Rest, Value as JValue};
    for (name, fqcn) in host.found(Kind::Filter) {
        let h = host.clone();
        let n = name.clone();
        env.add_filter(
            name,
            move |value: JValue, args: Rest<JValue>, kwargs: Kwargs| {
                let (args, kwargs) = plain_args(Some(value), &args, &kwargs)?;
                h.call(Kind::Filter, &n, args, kwargs)
                    .map(|v| mitogen_ansible::jinja::undefined::to_value(&v))
                    .map_err(|e| jinja_error(Kind::Filter, &fqcn, &e))
            },
        );
    }
    for (name, fqcn) in host.found(Kind::Test) {
        let h = host.clone();
        let n = name.clone();
        env.add_test(
            name,
            move |value: JValue, args: Rest<JValue>, kwargs: Kwargs| {
                let (args, kwargs) = plain_args(Some(value), &args, &kwargs)?;
                h.call(Kind::Test, &n, args, kwargs)
                    .map(|v| crate::template::truthy(&v))
                    .map_err(|e| jinja_error(Kind::Test, &fqcn, &e))
            },
        );
    }
}

/// A call's arguments as JSON (an undefined one is the undefined error it
/// would be in ansible-core, where touching it raises).
fn plain_args(
    first: Option<minijinja::value::Value>,
    args: &[minijinja::value::Value],
    kwargs: &minijinja::value::Kwargs,
) -> Result<(Vec<Value>, Map<String, Value>), minijinja::Error> {
    use minijinja::value::Value as JValue;
    let undefined = || minijinja::Error::from(minijinja::ErrorKind::UndefinedError);
    let mut out = Vec::new();
    for v in first.iter().chain(args) {
        if v.is_undefined() || mitogen_ansible::jinja::undefined::holds_undefined(v) {
            return Err(undefined());
        }
        out.push(mitogen_ansible::jinja::jv_to_json(v));
    }
    let mut kw = Map::new();
    for k in kwargs.args() {
        let v: JValue = kwargs.get(k)?;
        if v.is_undefined() {
            return Err(undefined());
        }
        kw.insert(k.to_owned(), mitogen_ansible::jinja::jv_to_json(&v));
    }
    Ok((out, kw))
}

/// A plugin's failure as ansible-core words it: `The filter plugin
/// 'ns.coll.x' failed: <its message>` (the name it resolved to).
fn jinja_error(kind: Kind, name: &str, e: &PluginError) -> minijinja::Error {
    mitogen_ansible::jinja::Failure::error(format!(
        "The {} plugin '{name}' failed: {e}",
        kind.as_str()
    ))
}
