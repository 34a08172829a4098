//! Remote bootstrap: how an agent gets onto a target that has only `sh`.
//!
//! ```text
//! controller                                   target (via ssh/sudo/su/doas/...)
//! spawn method with stage 0 as the command ──► sh -c 'echo MITOGEN-RS-BOOT; eval "$(head -c N)"'
//! answer prompts on the PTY (method's Auth)    (password prompts, banners ...)
//! wait for the boot marker                 ◄── MITOGEN-RS-BOOT
//! send stage 1 (N bytes of sh)             ──► eval'd by stage 0
//!                                          ◄── MITOGEN-RS-UNAME Linux x86_64 zstd,xz,gzip
//! pick the agent binary for that platform
//! (hash and size from the controller cache)──► AGENT <sha256> <size>
//!                                          ◄── MITOGEN-RS-NOTE <why a cached agent or a
//!                                              directory was refused>       (0 or more)
//!   cache hit:                             ◄── MITOGEN-RS-HIT <path>     (nothing is sent)
//!   cache miss:                            ◄── MITOGEN-RS-SEND <path>
//!   strip, compress (once, cached)         ──► <zstd|xz|gzip|raw> <wire size>, then the bytes
//!                                              stage 1 decodes them to a temp name, checks
//!                                              size and the agent's own check, renames
//!                                          ◄── MITOGEN-RS-STORED <path>
//! stage 1 execs the agent                  ◄── greeting, then [`super::attach`] as for local
//! ```
//!
//! # What is checked, and when
//!
//! Every check of an agent binary on the target is made by the agent
//! itself: stage 1 runs `<file> --mitogen-check` (stdin closed), and the
//! program hashes the image it runs from (`/proc/self/exe`) with SHA-256
//! and prints `MITOGEN-RS-IMAGE <hex>`. Stage 1 runs the file as the agent
//! only if that line is exactly the hash the controller announced. So the
//! same check is made on every target, with or without `sha256sum`, and it
//! also proves that the file can be executed there: a file that is
//! corrupt, replaced (whatever its size and mtime: `cp -p`, `rsync -a` and
//! `tar` keep old mtimes), not an executable ("Exec format error"), or on a
//! filesystem now mounted `noexec` fails it. It is made
//!
//! - on every start, for a cached agent (the fast path), and
//! - after an upload, before the temp file is renamed into place.
//!
//! It costs one extra `exec` of the agent and a hash of its stripped
//! image: measured on the project's VM (SHA-NI), a 1.7 MiB release agent
//! checks in about 3 ms (plus ~1 ms for the `timeout 10` around it, which
//! stops a file that never exits), where `sha256sum` of the unstripped
//! 12 MiB binary costs 25–40 ms (see `benches/RESULTS.md`).
//! The agent started next is the file just checked; a file swapped in
//! between the two `exec`s (by someone who can write the user's own cache
//! directory) is not caught.
//!
//! # The cache and its fallback
//!
//! The cache is a per-user directory; stage 1 tries, in order, the
//! directories given with [`Bootstrap::cache_dir`] and then (unless
//! [`Bootstrap::only_cache_dir`]) `$XDG_CACHE_HOME/mitogen-rs` (or
//! `~/.cache/mitogen-rs`), `$TMPDIR/mitogen-rs-<uid>` (or `/tmp/...`) and
//! `/dev/shm/mitogen-rs-<uid>`.
//!
//! - **Fast path:** for each directory that holds `agent-<sha256>`, both
//!   owned by the user, the agent runs if it passes its check. One that
//!   fails is noted (`MITOGEN-RS-NOTE`, kept in [`BootstrapInfo::notes`]),
//!   removed, and the next directory is tried: a failed check is a miss,
//!   never an error.
//! - **Slow path (a miss):** the first directory that can be created, is
//!   owned by the user, is writable and lets a probe script execute (so a
//!   `noexec` mount is skipped) gets the upload. Each directory refused is
//!   noted with its reason (cannot be created, owned by another user —
//!   named —, not writable, noexec), so a directory pre-created by another
//!   user is passed over visibly. Cached agents a week old are removed
//!   from the chosen directory (every new build adds one). The upload goes
//!   to a temp name, is checked (size, then the agent's check) and renamed
//!   atomically, so concurrent bootstraps of one target cannot corrupt the
//!   cache. An upload that fails its check is an error: it is not retried,
//!   and the controller drops its stored compressed copy in case that was
//!   what was damaged.
//! - **Nothing usable:** [`ConnectError::Bootstrap`] names the user (name
//!   and uid) and lists every directory tried with why it was refused.
//!
//! # The controller's side
//!
//! The agent's hash and size come from a per-user controller cache keyed by
//! the binary's identity (see `agent_image.rs`: device, inode, size,
//! mtime), so a start against a warm target reads no part of the binary.
//! Only on a miss is the binary stripped of debug info (`objcopy
//! --strip-debug`; symbols stay), and compressed with the first of zstd,
//! xz and gzip that the target reported and the controller has; each form
//! is made once and stored in the controller cache.
//! [`BootstrapInfo::prepared_bytes`] says how much of the binary a start
//! had to read for that.

use super::agent_image::{CacheSetting, Encoding, Image};
use super::{Spawned, attach};
use crate::error::ConnectError;
use crate::{Context, Router, sys};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
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
    strip: bool,
    cache_dirs: Vec<String>,
    cache_dir_only: bool,
    controller_cache: CacheSetting,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            compress: true,
            strip: true,
            cache_dirs: Vec::new(),
            cache_dir_only: false,
            controller_cache: CacheSetting::Default,
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
    /// Whether a cached agent passed its check and ran (nothing uploaded).
    pub cache_hit: bool,
    /// SHA-256 (hex) of the agent binary the target runs.
    pub agent_sha256: String,
    /// Size of that binary (after stripping, before compression).
    pub agent_size: u64,
    /// How the upload was encoded (`zstd`, `xz`, `gzip`, `raw`); empty on a
    /// hit.
    pub encoding: String,
    /// Bytes of agent binary sent (after compression); 0 on a hit.
    pub uploaded_bytes: u64,
    /// Bytes of scripts and control lines sent.
    pub script_bytes: u64,
    /// Bytes of agent binary this controller read to hash, strip or
    /// compress it for this start: 0 when its caches already had what was
    /// needed (always, on a warm target once the controller cache is warm).
    pub prepared_bytes: u64,
    /// What the first stage noted on the way: cached agents that failed
    /// their check and cache directories it refused, each with the reason.
    pub notes: Vec<String>,
}

impl Bootstrap {
    /// Defaults: this program's own binary (stripped of debug info) for
    /// targets of the controller's platform, compressed with the best of
    /// zstd, xz and gzip that the target has, the default cache
    /// directories on the target and the default controller cache.
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

    /// Compress uploads with zstd, xz or gzip, the first of these the
    /// target has (and the controller too); off: send the binary as it is
    /// (default on).
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// Ship the agent without its debug info (`objcopy --strip-debug` on
    /// the controller, when present; default on). Symbols stay, so panics
    /// in agents still name functions.
    pub fn strip(mut self, on: bool) -> Self {
        self.strip = on;
        self
    }

    /// Tries this cache directory (a path the target's `sh` expands, e.g.
    /// `$HOME/.agents`) before the defaults; directories added by earlier
    /// calls come first.
    pub fn cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.cache_dirs.push(dir.into());
        self
    }

    /// Uses only this cache directory (and any added with
    /// [`Self::cache_dir`]), never the defaults.
    pub fn only_cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.cache_dirs.push(dir.into());
        self.cache_dir_only = true;
        self
    }

    /// Keeps the controller's derived agent (hash, stripped binary,
    /// compressed forms) in `dir` instead of
    /// `$XDG_CACHE_HOME/mitogen-rs/controller`.
    pub fn controller_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.controller_cache = CacheSetting::Dir(dir.into());
        self
    }

    /// Keeps the controller's derived agent in memory only: every new
    /// process hashes (and strips) its agent binary again.
    pub fn no_controller_cache(mut self) -> Self {
        self.controller_cache = CacheSetting::Off;
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
        for d in &self.cache_dirs {
            dirs.push_str(&format!("\"{}\" ", d.replace(['"', '\n'], "")));
        }
        if !self.cache_dir_only || self.cache_dirs.is_empty() {
            dirs.push_str(
                "\"${XDG_CACHE_HOME:-$HOME/.cache}/mitogen-rs\" \"${TMPDIR:-/tmp}/mitogen-rs-$u\" \"/dev/shm/mitogen-rs-$u\"",
            );
        }
        // Comments stay in the source, not on the wire.
        let mut out = String::new();
        for line in STAGE1.lines() {
            let t = line.trim_start();
            if !t.is_empty() && !t.starts_with('#') {
                out.push_str(&line.replace("@DIRS@", dirs.trim_end()));
                out.push('\n');
            }
        }
        out
    }
}

/// The first stage: POSIX sh, sent after stage 0's boot marker.
const STAGE1: &str = include_str!("stage1.sh");

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
    if let Err(e) = run_stages(&mut s, boot, (deadline, timeout)) {
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

/// `deadline` is when the connect must be done, and the whole connect
/// timeout it came from (what a timeout error reports).
fn run_stages(
    s: &mut Spawned,
    boot: &Bootstrap,
    deadline: (Instant, Duration),
) -> Result<(), ConnectError> {
    let name = s.name.clone();
    let io_err = |source: std::io::Error| ConnectError::Io {
        name: name.clone(),
        source,
    };
    let failed = |reason: String, notes: &[String]| ConnectError::Bootstrap {
        name: name.clone(),
        reason: if notes.is_empty() {
            reason
        } else {
            format!("{reason}: {}", notes.join("; "))
        },
    };
    let stage1 = boot.stage1();
    let mut script_bytes = stage1.len() as u64;
    let tx = s.tx.as_ref().unwrap_or(&s.rx);
    (&*tx).write_all(stage1.as_bytes()).map_err(io_err)?;
    let mut buf = std::mem::take(&mut s.initial);
    let uname = read_line(&s.rx, &mut buf, deadline, &name)?;
    let f: Vec<&str> = uname.split_whitespace().collect();
    let (os, arch, decoders) = match f.as_slice() {
        ["MITOGEN-RS-UNAME", os, arch, dec] => (
            (*os).to_owned(),
            (*arch).to_owned(),
            dec.split(',').map(str::to_owned).collect::<Vec<_>>(),
        ),
        _ => {
            return Err(failed(
                format!("unexpected first-stage output: {uname}"),
                &[],
            ));
        }
    };
    let path = agent_path(boot, &os, &arch).ok_or_else(|| ConnectError::NoAgent {
        name: name.clone(),
        os: os.clone(),
        arch: arch.clone(),
        have: have_list(boot),
    })?;
    let (image, mut prepared) =
        Image::identify(&path, boot.strip, &boot.controller_cache).map_err(io_err)?;
    let line = format!("AGENT {} {}\n", image.sha256, image.size);
    script_bytes += line.len() as u64;
    (&*tx).write_all(line.as_bytes()).map_err(io_err)?;
    let mut notes = Vec::new();
    let mut sent: Option<(Encoding, u64)> = None;
    let cache_path = loop {
        let answer = read_line(&s.rx, &mut buf, deadline, &name)?;
        let (verb, rest) = answer.split_once(' ').unwrap_or((answer.as_str(), ""));
        match (verb, sent) {
            ("MITOGEN-RS-NOTE", _) => notes.push(rest.to_owned()),
            ("MITOGEN-RS-HIT", None) | ("MITOGEN-RS-STORED", Some(_)) => break rest.to_owned(),
            ("MITOGEN-RS-SEND", None) => {
                let (enc, payload, read) =
                    pick_payload(&image, boot.compress, &decoders).map_err(|e| {
                        failed(format!("preparing the agent {}: {e}", path.display()), &[])
                    })?;
                prepared += read;
                let head = format!("{} {}\n", enc.name(), payload.len());
                script_bytes += head.len() as u64;
                (&*tx).write_all(head.as_bytes()).map_err(io_err)?;
                (&*tx).write_all(&payload).map_err(io_err)?;
                sent = Some((enc, payload.len() as u64));
            }
            ("MITOGEN-RS-ERROR", _) => {
                if let Some((enc, _)) = sent {
                    // What we sent did not decode to the agent: perhaps our
                    // stored copy is damaged. Make it afresh next time.
                    image.discard(enc);
                }
                return Err(failed(rest.to_owned(), &notes));
            }
            _ => {
                return Err(failed(
                    format!("unexpected first-stage output: {answer}"),
                    &notes,
                ));
            }
        }
    };
    s.initial = buf;
    s.info = Some(BootstrapInfo {
        os,
        arch,
        cache_path,
        cache_hit: sent.is_none(),
        agent_sha256: image.sha256.clone(),
        agent_size: image.size,
        encoding: sent.map(|(e, _)| e.name().to_owned()).unwrap_or_default(),
        uploaded_bytes: sent.map_or(0, |(_, n)| n),
        script_bytes,
        prepared_bytes: prepared,
        notes,
    });
    Ok(())
}

/// The best encoding both sides have, with its bytes and how many bytes of
/// agent were read to make them.
fn pick_payload(
    image: &Image,
    compress: bool,
    decoders: &[String],
) -> std::io::Result<(Encoding, Arc<Vec<u8>>, u64)> {
    let mut read = 0;
    if compress {
        for enc in Encoding::PREFERENCE {
            if decoders.iter().any(|d| d == enc.name()) {
                let (p, r) = image.payload(enc)?;
                read += r;
                if let Some(p) = p {
                    return Ok((enc, p, read));
                }
            }
        }
    }
    let (p, r) = image.payload(Encoding::Raw)?;
    let p = p.ok_or_else(|| std::io::Error::other("no raw agent bytes"))?;
    Ok((Encoding::Raw, p, read + r))
}

/// Reads one `MITOGEN-RS-` line (other lines are noise from the target and
/// skipped); leaves what follows it in `buf`.
fn read_line(
    rx: &File,
    buf: &mut Vec<u8>,
    (deadline, timeout): (Instant, Duration),
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
                timeout,
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
