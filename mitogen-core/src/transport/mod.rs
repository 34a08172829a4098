//! Shared transport machinery: what every connection method does once it
//! has a process whose stdin/stdout lead to an agent.
//!
//! ```text
//! method (local, ssh, sudo ...)         agent (same binary, --mitogen-agent)
//!   spawn process, get its stdio  ─────►  starts, writes greeting line
//!   read greeting (deadline)      ◄─────  "MITOGEN-RS-AGENT <proto> <registry> <pid>"
//!   check protocol + registry
//!   send config frame             ─────►  id, ancestors, max size, log level ...
//!   register stream with broker           joins its router, serves calls
//!   announce route upward (ADD_ROUTE)
//! ```
//!
//! Any failure before the greeting kills and reaps the process and reports
//! the last lines it printed.

pub(crate) mod agent_image;
pub mod bootstrap;
pub mod local;

use crate::api::{NewStream, add_stream};
use crate::error::ConnectError;
use crate::ids::ContextId;
use crate::message::{Message, codec};
use crate::{Context, Router, sys};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default deadline for a new context to greet.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The first bytes of an agent's greeting line.
pub(crate) const GREETING: &str = "MITOGEN-RS-AGENT ";

/// What a new agent is told right after it greets.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AgentConfig {
    pub(crate) identity: crate::router::Identity,
    pub(crate) log_level: u8,
    pub(crate) dump_secs: Option<f64>,
    pub(crate) spin_us: u64,
}

/// A started process whose stdio leads to an agent, ready for [`attach`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Spawned {
    /// The id the new context will get ([`allocate_id`]).
    pub id: ContextId,
    /// Its name, e.g. `local.3` or `ssh.web1`.
    pub name: String,
    /// The process (killed and reaped on failure, reaped after disconnect).
    pub child: Option<Child>,
    /// Reads the agent's stdout.
    pub rx: File,
    /// Writes the agent's stdin; `None` when it is `rx`'s fd (a socket).
    pub tx: Option<File>,
    /// The process's stderr, logged line by line and quoted in errors.
    pub stderr: Option<File>,
    /// The master side of the process's terminal, for methods that answer
    /// password prompts; kept open (and its output logged) for the life of
    /// the stream, since closing it would hang up the process.
    pub pty: Option<File>,
    /// Our copy of the terminal's slave side, held until the agent is
    /// attached: while no process has the slave open the master reads as
    /// hung up, which would hide the prompts of a program that has not yet
    /// opened `/dev/tty`.
    pub pty_slave: Option<OwnedFd>,
    /// Whether any output before the greeting is an error (true for local
    /// agents; remote shells may print banners first).
    pub strict: bool,
    /// Bytes already read from `rx` that belong to what follows.
    pub initial: Vec<u8>,
    /// What the bootstrap did, once it ran.
    pub info: Option<bootstrap::BootstrapInfo>,
}

impl Spawned {
    /// A spawned agent with everything needed and nothing optional.
    pub fn new(id: ContextId, name: String, rx: File) -> Self {
        Self {
            id,
            name,
            child: None,
            rx,
            tx: None,
            stderr: None,
            pty: None,
            pty_slave: None,
            strict: true,
            initial: Vec::new(),
            info: None,
        }
    }

    /// Kills and reaps the process (after a failure); returns its exit status
    /// and whatever its stderr and terminal still held.
    pub(crate) fn abort(&mut self, wait_for_exit: bool) -> (String, String) {
        let status = match &mut self.child {
            Some(c) => {
                // Give a process that is exiting anyway a moment to do so.
                let until = Instant::now() + Duration::from_millis(200);
                let mut st = c.try_wait().ok().flatten();
                while st.is_none() && wait_for_exit && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                    st = c.try_wait().ok().flatten();
                }
                if st.is_none() {
                    sys::kill(c.id());
                    st = c.wait().ok();
                }
                st.map_or_else(|| "unknown status".to_owned(), |st| st.to_string())
            }
            None => "no process".to_owned(),
        };
        let mut text = String::new();
        for f in [self.stderr.as_mut(), self.pty.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = sys::set_nonblocking(&*f, true);
            let mut e = Vec::new();
            let _ = f.read_to_end(&mut e);
            text.push_str(&String::from_utf8_lossy(&e));
        }
        (status, text)
    }
}

/// How a method's process is connected (see [`spawn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Tty {
    /// Data on a socketpair (stdin/stdout), no terminal: the process cannot
    /// prompt (ssh in batch mode, passwordless sudo, local agents).
    None,
    /// Data on a socketpair, plus a PTY as the controlling terminal for
    /// password prompts (ssh with a password, sudo, doas): Mitogen's hybrid
    /// mode, so bulk data never passes through a terminal.
    Hybrid,
    /// stdin/stdout are the PTY itself (`su`, which reads its password from
    /// stdin). Prompts then arrive in [`bootstrap::Seen::data`].
    Full,
}

/// Starts `cmd` in a new session, wired as `tty` says, with stderr on a
/// pipe. The result is ready for [`bootstrap::connect`] (or [`attach`]).
///
/// # Errors
/// [`ConnectError::Spawn`] naming the program.
pub fn spawn(id: ContextId, name: String, cmd: Command, tty: Tty) -> Result<Spawned, ConnectError> {
    spawn_in(id, name, cmd, tty, Session::New)
}

/// What a spawned process is detached into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// A new session (`setsid` before exec): no controlling terminal but
    /// the PTY it is given, so a program that prompts on `/dev/tty` (ssh,
    /// sudo) cannot reach the user's terminal. Needs a closure between fork
    /// and exec, so std forks the whole controller.
    New,
    /// A new process group in the controller's session: keyboard signals
    /// aimed at the controller's group miss it, and std can start it with
    /// `posix_spawn` (`CLONE_VM|CLONE_VFORK`, no copy of the controller's
    /// page tables, no copy-on-write faults or TLB shootdowns in its other
    /// threads). For our own agents, which never open a terminal.
    Group,
}

pub(crate) fn spawn_in(
    id: ContextId,
    name: String,
    mut cmd: Command,
    tty: Tty,
    session: Session,
) -> Result<Spawned, ConnectError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let err = |source| ConnectError::Spawn {
        program: program.clone(),
        source,
    };
    let pty = match tty {
        Tty::None => None,
        Tty::Hybrid | Tty::Full => Some(sys::open_pty().map_err(err)?),
    };
    let data = match tty {
        Tty::Full => None,
        _ => Some(UnixStream::pair().map_err(err)?),
    };
    let (stdin, stdout): (OwnedFd, OwnedFd) = match (&data, &pty) {
        (Some((_, theirs)), _) => (
            theirs.try_clone().map_err(err)?.into(),
            theirs.try_clone().map_err(err)?.into(),
        ),
        (None, Some((_, slave))) => (
            slave.try_clone().map_err(err)?,
            slave.try_clone().map_err(err)?,
        ),
        (None, None) => return Err(err(std::io::Error::other("no data channel"))),
    };
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped());
    match (session, &pty) {
        (Session::Group, None) => {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        _ => sys::new_session(&mut cmd, pty.as_ref().map(|(_, slave)| slave)),
    }
    let mut child = cmd.spawn().map_err(err)?;
    // Close our copies of the child's ends, so its exit reads as EOF.
    drop(cmd);
    let stderr = child.stderr.take().map(|e| File::from(OwnedFd::from(e)));
    let (master, slave) = match pty {
        Some((m, s)) => (Some(File::from(m)), Some(s)),
        None => (None, None),
    };
    let (rx, pty) = match (data, master) {
        (Some((ours, _theirs)), master) => (File::from(OwnedFd::from(ours)), master),
        (None, Some(master)) => (master, None),
        (None, None) => return Err(err(std::io::Error::other("no data channel"))),
    };
    let mut s = Spawned::new(id, name, rx);
    s.child = Some(child);
    s.stderr = stderr;
    s.pty = pty;
    s.pty_slave = slave;
    Ok(s)
}

/// Reads exactly `len` bytes of `file` at `offset` into a new payload
/// buffer, without zeroing it first (for file servers: the result goes into
/// a [`Message`] without another copy).
///
/// # Errors
/// The OS error, or `UnexpectedEof` if the file is shorter.
pub fn read_payload_at(file: &File, offset: u64, len: usize) -> std::io::Result<bytes::Bytes> {
    sys::pread_payload(file, offset, len)
}

/// Allocates an id for a new child of `router`'s context.
///
/// # Errors
/// [`ConnectError::AllocateId`] if the controller does not answer.
pub fn allocate_id(router: &Router) -> Result<ContextId, ConnectError> {
    router.node.ids.allocate(router.shared())
}

/// Completes a connection: waits for the greeting until `timeout`, checks
/// the protocol and registry, sends the agent its configuration and joins
/// its stream to the router.
///
/// # Errors
/// [`ConnectError`]: `Timeout`, `EarlyExit`, `Garbage`, `VersionMismatch`
/// or `Io`, each with what the process printed.
pub fn attach(router: &Router, mut s: Spawned, timeout: Duration) -> Result<Context, ConnectError> {
    let deadline = Instant::now() + timeout;
    let fail = |s: &mut Spawned, printed: Vec<u8>, kind: Fail| -> ConnectError {
        let (status, more) = s.abort(matches!(kind, Fail::Eof));
        let mut text = String::from_utf8_lossy(&printed).into_owned();
        text.push_str(&more);
        let printed = last_lines(&text, 20);
        let name = s.name.clone();
        match kind {
            Fail::Timeout => ConnectError::Timeout {
                name,
                timeout,
                printed,
            },
            Fail::Eof => ConnectError::EarlyExit {
                name,
                status,
                printed,
            },
            Fail::Garbage => ConnectError::Garbage { name, printed },
            Fail::Io(source) => ConnectError::Io { name, source },
        }
    };
    let initial = std::mem::take(&mut s.initial);
    let (line, rest) = match read_greeting(&s.rx, initial, deadline, s.strict) {
        Ok(v) => v,
        Err((kind, printed)) => return Err(fail(&mut s, printed, kind)),
    };
    let expect = greeting_line(router.registry());
    let local = expect
        .trim_end()
        .rsplit_once(' ')
        .map_or("", |p| p.0)
        .to_owned();
    if line != local {
        let err = ConnectError::VersionMismatch {
            name: s.name.clone(),
            remote: line,
            local,
        };
        let _ = fail(&mut s, Vec::new(), Fail::Garbage);
        return Err(err);
    }
    let shared = router.shared();
    let mut ancestors = vec![shared.me()];
    ancestors.extend(shared.id.ancestors.iter().copied());
    let config = AgentConfig {
        identity: crate::router::Identity {
            me: s.id,
            name: s.name.clone(),
            ancestors,
            unidirectional: shared.id.unidirectional,
            max_message_size: shared.id.max_message_size,
        },
        log_level: log::max_level() as u8,
        dump_secs: crate::diag::dump_interval().map(|d| d.as_secs_f64()),
        spin_us: crate::spin::window().as_micros() as u64,
    };
    let mut frame = Vec::new();
    match Message::typed(s.id, crate::Handle::NONE, &config) {
        Ok(msg) => codec::encode(&msg, &mut frame),
        Err(e) => return Err(ConnectError::BadOptions(e.to_string())),
    }
    let write = s.tx.as_ref().unwrap_or(&s.rx);
    if let Err(e) = (&*write).write_all(&frame) {
        return Err(fail(&mut s, Vec::new(), Fail::Io(e)));
    }
    let nb = [
        Some(&s.rx),
        s.tx.as_ref(),
        s.stderr.as_ref(),
        s.pty.as_ref(),
    ]
    .into_iter()
    .flatten()
    .try_for_each(|f| sys::set_nonblocking(f, true));
    if let Err(e) = nb {
        return Err(fail(&mut s, Vec::new(), Fail::Io(e)));
    }
    // The agent runs: the program no longer needs us to hold its terminal.
    drop(s.pty_slave.take());
    let name: Arc<str> = s.name.as_str().into();
    add_stream(
        shared,
        NewStream {
            remote: s.id,
            name: name.clone(),
            is_parent: false,
            rx: s.rx,
            tx: s.tx,
            child: s.child,
            // The terminal is logged through a duplicate and kept open
            // through the original until the stream closes.
            logs: s
                .stderr
                .into_iter()
                .chain(s.pty.as_ref().and_then(|p| p.try_clone().ok()))
                .collect(),
            keep: s.pty.into_iter().collect(),
            initial: rest,
        },
    );
    Ok(Context::with_info(
        router.clone(),
        s.id,
        name,
        s.info.map(Arc::new),
    ))
}

enum Fail {
    Timeout,
    Eof,
    Garbage,
    Io(std::io::Error),
}

/// The greeting an agent with `registry` prints (its pid is appended).
pub(crate) fn greeting_line(registry: &crate::Registry) -> String {
    format!(
        "{GREETING}{} {:016x} {}\n",
        crate::PROTOCOL_VERSION,
        registry.fingerprint(),
        std::process::id()
    )
}

/// Reads up to the greeting line; returns the line without its pid, and
/// any bytes after it.
fn read_greeting(
    rx: &File,
    initial: Vec<u8>,
    deadline: Instant,
    strict: bool,
) -> Result<(String, BytesMut), (Fail, Vec<u8>)> {
    let mut buf: Vec<u8> = initial;
    let marker = GREETING.as_bytes();
    loop {
        if let Some(pos) = buf.windows(marker.len()).position(|w| w == marker) {
            if strict && pos > 0 {
                return Err((Fail::Garbage, buf));
            }
            if let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') {
                let line = String::from_utf8_lossy(&buf[pos..pos + nl]).into_owned();
                let line = line
                    .rsplit_once(' ')
                    .map_or(line.as_str(), |p| p.0)
                    .to_owned();
                return Ok((line, BytesMut::from(&buf[pos + nl + 1..])));
            }
        } else if strict
            && !buf.is_empty()
            && !marker.starts_with(&buf[..buf.len().min(marker.len())])
        {
            // Give it a moment to finish printing, for a useful error.
            std::thread::sleep(Duration::from_millis(50));
            let mut more = [0u8; 4096];
            if sys::wait_readable(rx, Duration::ZERO).unwrap_or(false) {
                if let Ok(n) = (&*rx).read(&mut more) {
                    buf.extend_from_slice(&more[..n]);
                }
            }
            return Err((Fail::Garbage, buf));
        }
        if buf.len() > 1 << 20 {
            return Err((Fail::Garbage, buf));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((Fail::Timeout, buf));
        }
        match sys::wait_readable(rx, left) {
            Ok(false) => return Err((Fail::Timeout, buf)),
            Ok(true) => {}
            Err(e) => return Err((Fail::Io(e), buf)),
        }
        let mut chunk = [0u8; 4096];
        match (&*rx).read(&mut chunk) {
            Ok(0) => return Err((Fail::Eof, buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err((Fail::Eof, buf));
            }
            Err(e) => return Err((Fail::Io(e), buf)),
        }
    }
}

/// The last `n` lines of what a program printed, [`sanitise`]d.
fn last_lines(text: &str, n: usize) -> String {
    let clean = sanitise(text);
    let lines: Vec<&str> = clean.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Terminal output made safe to print: what a terminal would have shown,
/// as plain text.
///
/// - carriage return and backspace move the cursor and later characters
///   overwrite, as on a terminal (so sudo's `pwfeedback` erasing `*`s with
///   `\b \b` leaves no trace), and `\r\n` is a newline;
/// - ANSI escape sequences (colours, cursor movement, window titles) are
///   dropped;
/// - other control characters (C0, DEL, C1) and bidirectional-override
///   characters, which could disguise the message, are shown escaped
///   (`\x07`, `\u{202e}`);
/// - trailing blanks of each line are removed.
///
/// Every text a connection error quotes from a program goes through this
/// (mitogen-ssh's `AuthError`, and core's own "it printed" lines).
///
/// ```
/// let shown = mitogen_core::transport::sanitise("Password: **\u{8} \u{8}\u{8} \u{8}\r\nbad\x1b[31m!\x1b[0m");
/// assert_eq!(shown, "Password:\nbad!");
/// ```
pub fn sanitise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut line: Vec<char> = Vec::new();
    let mut col = 0usize;
    let put = |line: &mut Vec<char>, col: &mut usize, c: char| {
        match line.get_mut(*col) {
            Some(slot) => *slot = c,
            None => line.push(c),
        }
        *col += 1;
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                let l: String = line.drain(..).collect();
                out.push_str(l.trim_end());
                out.push('\n');
                col = 0;
            }
            '\r' => col = 0,
            '\u{8}' => col = col.saturating_sub(1),
            '\t' => put(&mut line, &mut col, '\t'),
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \\.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // A two-character sequence (or a lone ESC at the end).
                _ => {}
            },
            c if c.is_control() => {
                for e in format!("\\x{:02x}", u32::from(c)).chars() {
                    put(&mut line, &mut col, e);
                }
            }
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                for e in c.escape_unicode() {
                    put(&mut line, &mut col, e);
                }
            }
            c => put(&mut line, &mut col, c),
        }
    }
    let l: String = line.into_iter().collect();
    out.push_str(l.trim_end());
    out
}
