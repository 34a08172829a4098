//! Remote bootstrap: how an agent gets onto a target that has only `sh`.
//!
//! ```text
//! controller                                   target (via ssh/sudo/su/doas/...)
//! spawn method with stage 0 as the command ──► sh -c 'echo MITOGEN-RS-BOOT; eval "$(head -c N)"'
//! answer prompts on the PTY (method's Auth)    (password prompts, banners ...)
//! wait for the boot marker                 ◄── MITOGEN-RS-BOOT
//! send stage 1 (N bytes of sh)             ──► eval'd by stage 0
//!                                          ◄── MITOGEN-RS-UNAME Linux x86_64 <has gzip>
//! pick the agent binary for that platform
//!                                          ──► AGENT <sha256> <size> <wire size> <raw|gzip>
//!   cache hit:                             ◄── MITOGEN-RS-HIT <path>     (nothing is sent)
//!   cache miss:                            ◄── MITOGEN-RS-SEND <path>
//!                                          ──► the binary; stage 1 writes it to a temp name,
//!                                              checks size and sha256, renames it into place
//! stage 1 execs the agent                  ◄── greeting, then [`super::attach`] as for local
//! ```
//!
//! The cache is a per-user directory: `$XDG_CACHE_HOME/mitogen-rs` (or
//! `~/.cache/mitogen-rs`), else `$TMPDIR/mitogen-rs-<uid>`, else
//! `/dev/shm/mitogen-rs-<uid>`; a directory is used only if it is owned by the
//! user, writable, and allows executing files (a probe script is run there),
//! so a `noexec` mount is skipped. Uploads go to a temp name and are renamed
//! atomically, so concurrent bootstraps of one target cannot corrupt the
//! cache; a cached file whose size or hash is wrong is replaced.
//!
//! Hashing a 10 MB agent costs ~40 ms on the target, a quarter of an ssh
//! login, so it is not repeated on every start: after a successful check
//! (or upload) stage 1 leaves an empty `agent-<hash>.ok` stamp, and a later
//! start execs the agent at once if its size is right and it has not been
//! written since the stamp (`find -newer`, nanosecond mtimes on Linux). Any
//! write to the agent, or a file put in its place, sends it back through the
//! full size and sha256 check. On a miss, cached agents older than a week
//! are removed (every new build of a program adds one).

use super::{Spawned, attach};
use crate::error::ConnectError;
use crate::{Context, Router, sys};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Longest wait for a program to turn echo off before its password is sent.
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// The line stage 0 prints once the method has handed over to `sh`.
pub const BOOT_MARKER: &str = "MITOGEN-RS-BOOT";

/// How agents are bootstrapped on targets. Serialisable so `via` hops use
/// the same settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    agents: Vec<(String, String, PathBuf)>,
    compress: bool,
    cache_dir: Option<String>,
    cache_dir_only: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            compress: true,
            cache_dir: None,
            cache_dir_only: false,
        }
    }
}

/// What one bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootstrapInfo {
    /// `uname -s` on the target.
    pub os: String,
    /// `uname -m` on the target.
    pub arch: String,
    /// Where the agent is cached on the target.
    pub cache_path: String,
    /// Whether a verified cached agent was used (nothing uploaded).
    pub cache_hit: bool,
    /// Bytes of agent binary sent (after compression); 0 on a hit.
    pub uploaded_bytes: u64,
    /// Bytes of scripts and control lines sent.
    pub script_bytes: u64,
}

impl Bootstrap {
    /// Defaults: this program's own binary for targets of the controller's
    /// platform, gzip when the target has it, the default cache directories.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the agent binary for targets whose `uname -s` / `uname -m`
    /// are `os` / `arch` (e.g. a cross-compiled build for `Linux aarch64`).
    /// It must register the same functions as this program.
    pub fn agent_for(mut self, os: &str, arch: &str, path: impl Into<PathBuf>) -> Self {
        self.agents
            .push((os.to_owned(), arch.to_owned(), path.into()));
        self
    }

    /// Compress uploads with gzip when the target has `gzip` (default on).
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// Tries this cache directory first (a path the target's `sh` expands,
    /// e.g. `$HOME/.agents`), then the defaults.
    pub fn cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.cache_dir = Some(dir.into());
        self.cache_dir_only = false;
        self
    }

    /// Uses only this cache directory, never the defaults.
    pub fn only_cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.cache_dir = Some(dir.into());
        self.cache_dir_only = true;
        self
    }

    /// The `sh -c` script of stage 0 (no single quotes in it).
    pub fn stage0_script(&self) -> String {
        // On a terminal (full TTY mode) binary data needs raw mode; on a
        // pipe or socket stty fails quietly.
        format!(
            "stty raw -echo 2>/dev/null; echo {BOOT_MARKER}; eval \"$(head -c {})\"",
            self.stage1().len()
        )
    }

    /// Stage 0 as an argument vector, for methods that exec a command
    /// directly (`sudo ... -- sh -c SCRIPT`).
    pub fn stage0_argv(&self) -> Vec<String> {
        vec!["sh".into(), "-c".into(), self.stage0_script()]
    }

    /// Stage 0 as one command line for a login shell (ssh's remote command,
    /// `su -c`): `sh -c '...'`, which bash, dash, zsh, tcsh and fish all
    /// parse the same way.
    pub fn stage0_shell(&self) -> String {
        format!("sh -c '{}'", self.stage0_script())
    }

    fn stage1(&self) -> String {
        let mut dirs = String::new();
        if let Some(d) = &self.cache_dir {
            dirs.push_str(&format!("\"{}\" ", d.replace('"', "")));
        }
        if !self.cache_dir_only || self.cache_dir.is_none() {
            dirs.push_str(
                "\"${XDG_CACHE_HOME:-$HOME/.cache}/mitogen-rs\" \"${TMPDIR:-/tmp}/mitogen-rs-$u\" \"/dev/shm/mitogen-rs-$u\"",
            );
        }
        STAGE1.replace("@DIRS@", &dirs)
    }
}

const STAGE1: &str = r#"u=$(id -u 2>/dev/null || echo unknown)
gz=0; command -v gzip >/dev/null 2>&1 && gz=1
set -- $(uname -sm)
printf 'MITOGEN-RS-UNAME %s %s %s\n' "$1" "$2" "$gz"
read -r verb hash size wire enc || exit 1
[ "$verb" = AGENT ] || { echo "MITOGEN-RS-ERROR $verb $hash $size $wire $enc"; exit 1; }
sum() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  elif command -v sha256 >/dev/null 2>&1; then sha256 -q "$1"
  else echo "$hash"; fi
}
sized() { [ -f "$1" ] && [ "$(wc -c < "$1")" -eq "$size" ]; }
ok() { sized "$1" && [ "$(sum "$1")" = "$hash" ]; }
# Fast path: an agent verified earlier (its .ok stamp) and not written since.
for d in @DIRS@; do
  f="$d/agent-$hash"
  if [ -O "$f" ] && [ -f "$f.ok" ] && sized "$f" && [ -z "$(find "$f" -newer "$f.ok" 2>/dev/null)" ]; then
    echo "MITOGEN-RS-HIT $f"; exec "$f" --mitogen-agent
  fi
done
for d in @DIRS@; do
  mkdir -p "$d" 2>/dev/null && [ -O "$d" ] && [ -w "$d" ] || continue
  chmod 700 "$d" 2>/dev/null
  p="$d/.probe.$$"
  printf '#!/bin/sh\nexit 0\n' > "$p" 2>/dev/null && chmod 700 "$p" && "$p" 2>/dev/null
  r=$?; rm -f "$p"; [ "$r" = 0 ] || continue
  f="$d/agent-$hash"
  if ok "$f"; then : > "$f.ok"; echo "MITOGEN-RS-HIT $f"; exec "$f" --mitogen-agent; fi
  rm -f "$f.ok"
  # Each new agent version adds a file: on a miss, drop those a week old.
  find "$d" -maxdepth 1 -name 'agent-*' -mtime +7 -exec rm -f {} + 2>/dev/null
  echo "MITOGEN-RS-SEND $f"
  t="$f.$$.tmp"
  if [ "$enc" = gzip ]; then head -c "$wire" | gzip -dc > "$t"; else head -c "$wire" > "$t"; fi
  if ok "$t"; then chmod 700 "$t" && mv -f "$t" "$f" && : > "$f.ok" && exec "$f" --mitogen-agent; fi
  rm -f "$t"; echo "MITOGEN-RS-ERROR the uploaded agent failed its size or sha256 check at $t"; exit 1
done
echo "MITOGEN-RS-ERROR no cache directory that is owned by $u, writable and allows executing files"
exit 1
"#;

/// Text the target printed while the method was authenticating.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Seen {
    /// On the data channel (stdout), before the boot marker.
    pub data: String,
    /// On the terminal (prompts, when the method has one).
    pub pty: String,
    /// On stderr.
    pub stderr: String,
}

impl Seen {
    /// Everything, for error messages: stderr, terminal, then stdout.
    pub fn all(&self) -> String {
        [&self.stderr, &self.pty, &self.data]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What an [`Auth`] wants done after new output.
#[derive(Debug)]
#[non_exhaustive]
pub enum Step {
    /// Keep waiting.
    Continue,
    /// Write these bytes to the terminal (a password and newline).
    Send(Vec<u8>),
    /// Give up with this error.
    Fail(Box<dyn std::error::Error + Send + Sync>),
}

/// A method's side of the conversation before the target's `sh` runs:
/// answering prompts and explaining failures.
pub trait Auth {
    /// Called after every new piece of output.
    fn on_output(&mut self, seen: &Seen) -> Step;
    /// The process ended (`timed_out == false`) or the deadline passed
    /// before the boot marker: classify what it printed, if recognised.
    fn classify(
        &mut self,
        seen: &Seen,
        timed_out: bool,
    ) -> Option<Box<dyn std::error::Error + Send + Sync>>;
}

/// An [`Auth`] that expects no prompts.
#[derive(Debug, Default)]
pub struct NoAuth;
impl Auth for NoAuth {
    fn on_output(&mut self, _: &Seen) -> Step {
        Step::Continue
    }
    fn classify(&mut self, _: &Seen, _: bool) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        None
    }
}

/// Runs the whole remote bootstrap on a spawned method process and attaches
/// the agent: waits for the boot marker (answering prompts through `auth`),
/// runs stage 1, uploads the agent on a cache miss, then [`attach`].
///
/// # Errors
/// [`ConnectError`]: the method's classified error, `Timeout`/`EarlyExit`
/// with what was printed, `NoAgent`, `Bootstrap`, or what `attach` reports.
pub fn connect(
    router: &Router,
    mut s: Spawned,
    boot: &Bootstrap,
    auth: &mut dyn Auth,
    timeout: Duration,
) -> Result<Context, ConnectError> {
    let deadline = Instant::now() + timeout;
    wait_for_boot(&mut s, auth, deadline, timeout)?;
    if let Err(e) = run_stages(&mut s, boot, deadline) {
        let _ = s.abort(false);
        return Err(e);
    }
    s.strict = false;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    attach(router, s, left)
}

/// Everything a wrapping method does once it has its command line: allocate
/// an id, start `argv` wired as `tty` says, and [`connect`] through it.
/// `name` turns the new id into the context's name.
///
/// # Errors
/// As [`connect`], plus `Spawn` and `AllocateId`.
pub fn connect_command(
    router: &Router,
    name: impl FnOnce(crate::ContextId) -> String,
    argv: &[String],
    tty: super::Tty,
    boot: &Bootstrap,
    auth: &mut dyn Auth,
    timeout: Duration,
) -> Result<Context, ConnectError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| ConnectError::BadOptions("empty command line".into()))?;
    let id = super::allocate_id(router)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let spawned = super::spawn(id, name(id), cmd, tty)?;
    connect(router, spawned, boot, auth, timeout)
}

fn wait_for_boot(
    s: &mut Spawned,
    auth: &mut dyn Auth,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ConnectError> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut seen = Seen::default();
    let mut data: Vec<u8> = std::mem::take(&mut s.initial);
    let (mut pty_open, mut err_open) = (s.pty.is_some(), s.stderr.is_some());
    // A password waits until the program has turned echo off (it flushes
    // input typed earlier), or at most ECHO_WAIT.
    let mut pending: Option<(Vec<u8>, Instant)> = None;
    let outcome: Result<(), bool> = loop {
        if let Some(pos) = find(&data, BOOT_MARKER.as_bytes()) {
            if let Some(nl) = data[pos..].iter().position(|b| *b == b'\n') {
                s.initial = data[pos + nl + 1..].to_vec();
                return Ok(());
            }
        }
        if let Some((bytes, since)) = &pending {
            let tty = s.pty.as_ref().unwrap_or(&s.rx);
            if !sys::echo_on(tty) || since.elapsed() >= ECHO_WAIT {
                if let Err(e) = (&*tty).write_all(bytes) {
                    return Err(ConnectError::Io {
                        name: s.name.clone(),
                        source: e,
                    });
                }
                pending = None;
            }
        }
        let mut left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(true);
        }
        if pending.is_some() {
            left = left.min(Duration::from_millis(5));
        }
        // With a terminal as the data channel (su), our own copy of its
        // slave keeps the channel open after the program exits: notice the
        // exit itself.
        let exited = s
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited && !sys::wait_readable(&s.rx, Duration::ZERO).unwrap_or(false) {
            break Err(false);
        }
        left = left.min(Duration::from_millis(50));
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        let ready = {
            let mut fds = vec![PollFd::new(&s.rx, PollFlags::IN)];
            let mut at = [None, None];
            let extra = [(pty_open, s.pty.as_ref()), (err_open, s.stderr.as_ref())];
            for (i, (open, f)) in extra.into_iter().enumerate() {
                if let (true, Some(f)) = (open, f) {
                    fds.push(PollFd::new(f, PollFlags::IN));
                    at[i] = Some(fds.len() - 1);
                }
            }
            let (pty_at, err_at) = (at[0], at[1]);
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(ConnectError::Io {
                        name: s.name.clone(),
                        source: e.into(),
                    });
                }
            }
            let ready = |i: Option<usize>| i.is_some_and(|i| !fds[i].revents().is_empty());
            [ready(Some(0)), ready(pty_at), ready(err_at)]
        };
        let mut data_eof = false;
        if ready[0] {
            match read_some(&s.rx) {
                Some(b) => {
                    data.extend_from_slice(&b);
                    seen.data.push_str(&String::from_utf8_lossy(&b));
                }
                None => data_eof = true,
            }
        }
        if ready[1] {
            match s.pty.as_ref().and_then(read_some) {
                Some(b) => seen.pty.push_str(&String::from_utf8_lossy(&b)),
                None => pty_open = false,
            }
        }
        if ready[2] {
            match s.stderr.as_ref().and_then(read_some) {
                Some(b) => seen.stderr.push_str(&String::from_utf8_lossy(&b)),
                None => err_open = false,
            }
        }
        match auth.on_output(&seen) {
            Step::Continue => {}
            Step::Send(bytes) => pending = Some((bytes, Instant::now())),
            Step::Fail(source) => {
                let _ = s.abort(false);
                return Err(ConnectError::Method {
                    name: s.name.clone(),
                    source,
                });
            }
        }
        if data_eof {
            break Err(false);
        }
    };
    let timed_out = outcome == Err(true);
    let (status, more) = s.abort(!timed_out);
    seen.stderr.push_str(&more);
    if let Some(source) = auth.classify(&seen, timed_out) {
        return Err(ConnectError::Method {
            name: s.name.clone(),
            source,
        });
    }
    let printed = super::last_lines(&seen.all(), 20);
    Err(if timed_out {
        ConnectError::Timeout {
            name: s.name.clone(),
            timeout,
            printed,
        }
    } else {
        ConnectError::EarlyExit {
            name: s.name.clone(),
            status,
            printed,
        }
    })
}

/// Reads what is there; `None` at end of file (or a hung-up terminal).
fn read_some(f: &File) -> Option<Vec<u8>> {
    let mut buf = [0u8; 8192];
    loop {
        match (&*f).read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => return Some(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(Vec::new()),
            // EIO: the other side of a terminal closed.
            Err(_) => return None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn run_stages(s: &mut Spawned, boot: &Bootstrap, deadline: Instant) -> Result<(), ConnectError> {
    let name = s.name.clone();
    let io_err = |source: std::io::Error| ConnectError::Io {
        name: name.clone(),
        source,
    };
    let stage1 = boot.stage1();
    let mut script_bytes = stage1.len() as u64;
    let tx = s.tx.as_ref().unwrap_or(&s.rx);
    (&*tx).write_all(stage1.as_bytes()).map_err(io_err)?;
    let mut buf = std::mem::take(&mut s.initial);
    let uname = read_line(&s.rx, &mut buf, deadline, &name)?;
    let f: Vec<&str> = uname.split_whitespace().collect();
    let (os, arch, has_gzip) = match f.as_slice() {
        ["MITOGEN-RS-UNAME", os, arch, gz] => ((*os).to_owned(), (*arch).to_owned(), *gz == "1"),
        _ => {
            return Err(ConnectError::Bootstrap {
                name,
                reason: format!("unexpected first-stage output: {uname}"),
            });
        }
    };
    let path = agent_path(boot, &os, &arch).ok_or_else(|| ConnectError::NoAgent {
        name: name.clone(),
        os: os.clone(),
        arch: arch.clone(),
        have: have_list(boot),
    })?;
    let image = AgentImage::load(&path).map_err(io_err)?;
    let gz = if boot.compress && has_gzip {
        image.gzip()
    } else {
        None
    };
    let (payload, enc): (&[u8], &str) = match gz {
        Some(g) => (g, "gzip"),
        None => (&image.bytes, "raw"),
    };
    let line = format!(
        "AGENT {} {} {} {enc}\n",
        image.sha256,
        image.bytes.len(),
        payload.len()
    );
    script_bytes += line.len() as u64;
    (&*tx).write_all(line.as_bytes()).map_err(io_err)?;
    let answer = read_line(&s.rx, &mut buf, deadline, &name)?;
    let (verb, rest) = answer.split_once(' ').unwrap_or((answer.as_str(), ""));
    let cache_hit = match verb {
        "MITOGEN-RS-HIT" => true,
        "MITOGEN-RS-SEND" => {
            (&*tx).write_all(payload).map_err(io_err)?;
            false
        }
        _ => {
            let reason = answer
                .strip_prefix("MITOGEN-RS-ERROR ")
                .unwrap_or(&answer)
                .to_owned();
            return Err(ConnectError::Bootstrap { name, reason });
        }
    };
    s.initial = buf;
    s.info = Some(BootstrapInfo {
        os,
        arch,
        cache_path: rest.to_owned(),
        cache_hit,
        uploaded_bytes: if cache_hit { 0 } else { payload.len() as u64 },
        script_bytes,
    });
    Ok(())
}

/// Reads one `MITOGEN-RS-` line (other lines are noise from the target and
/// skipped); leaves what follows it in `buf`.
fn read_line(
    rx: &File,
    buf: &mut Vec<u8>,
    deadline: Instant,
    name: &str,
) -> Result<String, ConnectError> {
    let mut noise = String::new();
    loop {
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if line.starts_with("MITOGEN-RS-") {
                return Ok(line);
            }
            noise.push_str(&line);
            noise.push('\n');
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let printed = || super::last_lines(&format!("{noise}{}", String::from_utf8_lossy(buf)), 20);
        if left.is_zero() || !sys::wait_readable(rx, left).unwrap_or(false) {
            return Err(ConnectError::Timeout {
                name: name.to_owned(),
                timeout: left,
                printed: printed(),
            });
        }
        match read_some(rx) {
            Some(b) => buf.extend_from_slice(&b),
            None => {
                return Err(ConnectError::EarlyExit {
                    name: name.to_owned(),
                    status: "first stage ended".into(),
                    printed: printed(),
                });
            }
        }
    }
}

fn local_platform() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.sysname().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    )
}

fn agent_path(boot: &Bootstrap, os: &str, arch: &str) -> Option<PathBuf> {
    if let Some((_, _, p)) = boot.agents.iter().find(|(o, a, _)| o == os && a == arch) {
        return Some(p.clone());
    }
    let (los, larch) = local_platform();
    (los == os && larch == arch)
        .then(|| std::env::current_exe().ok())
        .flatten()
}

fn have_list(boot: &Bootstrap) -> String {
    let (los, larch) = local_platform();
    let mut have = vec![format!("{los} {larch} (this program)")];
    have.extend(
        boot.agents
            .iter()
            .map(|(o, a, p)| format!("{o} {a} ({})", p.display())),
    );
    have.join(", ")
}

/// An agent binary read into memory, with its hash and (lazily) its gzip.
struct AgentImage {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
    gz: OnceLock<Option<Vec<u8>>>,
}

impl AgentImage {
    fn load(path: &Path) -> std::io::Result<Arc<Self>> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<AgentImage>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(img) = cache.lock().get(path) {
            return Ok(img.clone());
        }
        let bytes = std::fs::read(path)?;
        let sha256 = super::sha256_hex(&bytes);
        let img = Arc::new(Self {
            path: path.to_owned(),
            bytes,
            sha256,
            gz: OnceLock::new(),
        });
        cache.lock().insert(path.to_owned(), img.clone());
        Ok(img)
    }

    /// The binary compressed by the system's `gzip -1`, if it has one.
    fn gzip(&self) -> Option<&[u8]> {
        self.gz
            .get_or_init(|| {
                let input = File::open(&self.path).ok()?;
                let out = std::process::Command::new("gzip")
                    .args(["-1", "-c"])
                    .stdin(input)
                    .stderr(std::process::Stdio::null())
                    .output()
                    .ok()?;
                (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
            })
            .as_deref()
    }
}
