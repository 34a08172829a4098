//! Warm Python fork servers, one per interpreter in a context: the agent
//! starts `INTERPRETER -c py/forkserver.py TREE`, which imports
//! `ansible.module_utils.basic` once and forks a fresh child per task. The
//! agent talks to it over its stdin/stdout (JSON header lines, then raw
//! bytes) and replaces it when it dies or hangs.

use crate::agent::RawRun;
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE: &str = include_str!("py/forkserver.py");
/// How long a new server may take to import `basic`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Slack past a task's own deadline before the server counts as hung.
const HANG_SLACK: Duration = Duration::from_secs(10);

/// The fork servers an agent has running, so that none outlives it with
/// its tasks: when the agent shuts down (its parent gone, say the
/// controller was interrupted) the router drops its extensions, this among
/// them, even while a task's call still holds its server. Each server's
/// children (a spare, the running task: each the leader of its own
/// session) are killed with their process groups, then the server.
#[derive(Default)]
pub(crate) struct Reaper {
    servers: Mutex<std::collections::HashSet<u32>>,
}

impl Reaper {
    fn add(&self, pid: u32) {
        self.servers.lock().insert(pid);
    }

    fn remove(&self, pid: u32) {
        self.servers.lock().remove(&pid);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.servers.get_mut().drain() {
            kill_server_tree(pid);
        }
    }
}

/// SIGKILL to the process groups `server`'s children lead (its spare and
/// running task; read from `/proc` while `server` is alive, so no stale
/// pid is signalled), then to `server` itself.
fn kill_server_tree(server: u32) {
    let path = format!("/proc/{server}/task/{server}/children");
    if let Ok(text) = std::fs::read_to_string(path) {
        for child in text
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            crate::process::kill_group(child);
        }
    }
    crate::process::kill_process(server);
}

/// Why a fork server could not run a task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("cannot start the Python fork server: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the Python fork server ({interpreter}) did not start: {detail}")]
    Start { interpreter: String, detail: String },
    #[error("the Python fork server ({interpreter}) died while running a task")]
    Died { interpreter: String },
    #[error("the Python fork server ({interpreter}) hung; it was killed and will be replaced")]
    Hung { interpreter: String },
    #[error("fork server i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One task for a fork server.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyRequest {
    pub(crate) fqn: String,
    pub(crate) argv0: String,
    pub(crate) params: String,
    #[serde(serialize_with = "env_map")]
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
    #[serde(serialize_with = "secs")]
    pub(crate) timeout: Duration,
    /// The module's soft `RLIMIT_NOFILE` (0: inherited).
    pub(crate) rlimit_nofile: u64,
}

fn env_map<S: serde::Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v)))
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

struct Frame {
    header: serde_json::Value,
    payload: Vec<u8>,
}

struct Server {
    child: Child,
    /// Weak: only the router's extension map may keep the reaper alive, so
    /// that dropping the map runs it.
    reaper: std::sync::Weak<Reaper>,
    stdin: ChildStdin,
    frames: Receiver<Frame>,
    tree: PathBuf,
    /// The pid the server said will run the next task.
    next_pid: Option<u32>,
}

impl Server {
    fn start(
        interpreter: &str,
        tree: &Path,
        reaper: &std::sync::Weak<Reaper>,
    ) -> Result<Self, ServerError> {
        let mut child = Command::new(interpreter)
            .arg("-c")
            .arg(SOURCE)
            .arg(tree)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .current_dir("/")
            .spawn()
            .map_err(ServerError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ServerError::Spawn(std::io::Error::other("no pipes")));
        };
        let (tx, frames) = bounded(4);
        std::thread::Builder::new()
            .name("forkserver-reader".into())
            .spawn(move || {
                let mut r = BufReader::new(stdout);
                loop {
                    let mut line = Vec::new();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        return;
                    };
                    let n = ["out", "err"]
                        .iter()
                        .map(|k| {
                            header
                                .get(k)
                                .and_then(serde_json::Value::as_u64)
                                .unwrap_or(0)
                        })
                        .sum::<u64>();
                    let mut payload = Vec::new();
                    if n > 0 && (&mut r).take(n).read_to_end(&mut payload).is_err() {
                        return;
                    }
                    if tx.send(Frame { header, payload }).is_err() {
                        return;
                    }
                }
            })?;
        if let Some(r) = reaper.upgrade() {
            r.add(child.id());
        }
        let mut me = Self {
            child,
            reaper: reaper.clone(),
            stdin,
            frames,
            tree: tree.to_owned(),
            next_pid: None,
        };
        match me.frames.recv_timeout(START_TIMEOUT) {
            Ok(f) if f.header.get("ready").is_some() => {
                me.next_pid = f
                    .header
                    .get("spare")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok());
                Ok(me)
            }
            other => {
                me.kill(None);
                Err(ServerError::Start {
                    interpreter: interpreter.to_owned(),
                    detail: match other {
                        Ok(f) => format!("unexpected greeting {}", f.header),
                        Err(RecvTimeoutError::Timeout) => {
                            format!("no greeting in {START_TIMEOUT:?}")
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            "it exited (is this a Python >= 3.8 interpreter?)".into()
                        }
                    },
                })
            }
        }
    }

    fn kill(&mut self, task_pgid: Option<u32>) {
        if let Some(p) = task_pgid {
            crate::process::kill_group(p);
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_server_tree(self.child.id());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reaper.upgrade() {
            r.remove(self.child.id());
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one task; `Err` leaves the server unusable.
    fn run(&mut self, interpreter: &str, req: &PyRequest) -> Result<RawRun, ServerError> {
        let deadline = Instant::now() + req.timeout + HANG_SLACK;
        let frame_pid = |f: &Frame, k: &str| {
            f.header
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
        };
        // Announcements queued since the last task, taken before the
        // request goes out: after it, a frame may be this task's result
        // (a quick module can answer before this thread runs again).
        while let Ok(f) = self.frames.try_recv() {
            if let Some(p) = frame_pid(&f, "spare") {
                self.next_pid = Some(p);
            }
        }
        let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line).map_err(|_| ServerError::Died {
            interpreter: interpreter.to_owned(),
        })?;
        let mut task_pid = self.next_pid.take();
        loop {
            match self
                .frames
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(f) if f.header.get("spare").is_some() => {
                    // Forked while this task runs: the next task's child.
                    self.next_pid = frame_pid(&f, "spare");
                }
                Ok(f) if f.header.get("started").is_some() => {
                    task_pid = f
                        .header
                        .get("pid")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|p| u32::try_from(p).ok());
                }
                Ok(f) => {
                    let h = &f.header;
                    let n_out = h
                        .get("out")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    let n_out = usize::try_from(n_out).unwrap_or(0).min(f.payload.len());
                    let mut stdout = f.payload;
                    let stderr = stdout.split_off(n_out);
                    let flag =
                        |k: &str| h.get(k).and_then(serde_json::Value::as_bool) == Some(true);
                    return Ok(RawRun {
                        rc: h
                            .get("rc")
                            .and_then(serde_json::Value::as_i64)
                            .and_then(|r| i32::try_from(r).ok())
                            .unwrap_or(-1),
                        stdout,
                        stderr,
                        timed_out: flag("timed_out"),
                        too_large: flag("too_large"),
                        agent_us: 0,
                        child_us: h
                            .get("child_us")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                        tmp: None,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill(task_pid);
                    return Err(ServerError::Hung {
                        interpreter: interpreter.to_owned(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.kill(task_pid);
                    return Err(ServerError::Died {
                        interpreter: interpreter.to_owned(),
                    });
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill(None);
    }
}

/// The fork servers of one context, by interpreter path.
#[derive(Default)]
pub(crate) struct Servers {
    map: Mutex<HashMap<String, Server>>,
}

impl Servers {
    /// Runs `req` in the server for `interpreter` (started on first use,
    /// restarted when dead, when its payload tree changed under it, or
    /// after it failed a task).
    pub(crate) fn run(
        &self,
        interpreter: &str,
        tree: &Path,
        tree_changed: bool,
        req: &PyRequest,
        reaper: &std::sync::Weak<Reaper>,
    ) -> Result<RawRun, ServerError> {
        let mut map = self.map.lock();
        let reuse = map
            .get_mut(interpreter)
            .is_some_and(|s| s.alive() && s.tree == tree && !tree_changed);
        if !reuse {
            map.remove(interpreter);
            map.insert(
                interpreter.to_owned(),
                Server::start(interpreter, tree, reaper)?,
            );
        }
        let Some(server) = map.get_mut(interpreter) else {
            return Err(ServerError::Died {
                interpreter: interpreter.to_owned(),
            });
        };
        let result = server.run(interpreter, req);
        if result.is_err() {
            map.remove(interpreter);
        }
        result
    }
}
