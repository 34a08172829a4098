//! `FileService`: flow-controlled file streaming through the context tree,
//! and atomic writes on the receiving side.
//!
//! ```text
//! receiver (any context)                          FileService (serving context)
//! fetch(): call Fetch(path, sink) ───────────────► resolve: registered path or prefix?
//!          ◄─── reply: size, mode, mtime, ack address   (canonical path: no `..` or symlink escape)
//!          ◄─── chunk (raw) ◄─┐ pump thread, round robin over transfers:
//!          ─── ack(bytes) ────┘   send while unacked < window and the link queue is short
//!          ◄─── end(size, checksum)
//! write chunks to an unnamed temp file in the destination directory
//! (O_TMPFILE), check size and checksum, fsync, set mode/owner/mtime, then
//! link it in and rename it over the destination.
//! ```
//!
//! Each transfer's window (unacknowledged bytes) grows from 2 MiB toward
//! twice the transfer's bandwidth-delay product (at most 32 MiB), so a fast
//! link is kept full and a slow receiver only ever holds up its own window.
//! The pump also stops feeding a link whose queue in this process exceeds
//! 512 KiB, so a call on a link busy with bulk data waits behind at most
//! that much. If the receiver or the sender dies, the unnamed temp file
//! disappears with the receiving process or is dropped: no partial file and
//! no temp file is left behind.

use crate::service::{Service, ServiceCx, ServiceExt, ServiceMethod, Services, local_instance};
use mitogen_core::{
    Blob, CallError, CallErrorKind, Context, ContextId, FnError, Message, Policy, Router, Sender,
};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bytes per data message.
pub const CHUNK: usize = 128 * 1024;
/// Files up to this size go inline in one call (no extra round trip).
pub const INLINE_MAX: u64 = 64 * 1024;
const MIN_WINDOW: u64 = 2 << 20;
/// The receiver acknowledges every this many bytes (a quarter of the
/// smallest window, so the sender never waits on a batched ack).
const ACK_EVERY: u64 = MIN_WINDOW / 4;
const MAX_WINDOW: u64 = 32 << 20;
const LINK_QUEUE_CAP: usize = 512 * 1024;
/// A transfer with no data for this long fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A fast 64-bit checksum of a byte stream (not cryptographic: the
/// transports already authenticate; this catches truncation and
/// corruption between the two files). Four independent lanes over 32-byte
/// blocks keep the multiplies from waiting on each other.
#[derive(Debug, Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    len: u64,
    pending: [u8; 32],
    npending: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            lanes: [
                0x9e37_79b9_7f4a_7c15,
                0xc2b2_ae3d_27d4_eb4f,
                0x1656_67b1_9e37_79f9,
                0x27d4_eb2f_1656_67c5,
            ],
            len: 0,
            pending: [0; 32],
            npending: 0,
        }
    }
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29)
}

impl Checksum {
    fn block(&mut self, b: &[u8]) {
        for (lane, w) in self.lanes.iter_mut().zip(b.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = mix(*lane, u64::from_le_bytes(word));
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (32 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.npending = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u64 {
        let mut last = [0u8; 32];
        last[..self.npending].copy_from_slice(&self.pending[..self.npending]);
        let mut c = self.clone();
        c.block(&last);
        let h = c
            .lanes
            .iter()
            .fold(c.len ^ (self.npending as u64), |h, l| mix(h, *l));
        mix(h, self.len)
    }
}

/// How a received file is written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Permission bits (default: the source's, or 0o644 for bytes).
    pub mode: Option<u32>,
    /// Owner uid and gid (needs the privilege to chown).
    pub owner: Option<(u32, u32)>,
    /// Modification time (default: the source's).
    pub mtime: Option<SystemTime>,
    /// Reader-side delay per chunk (tests of slow receivers only).
    #[doc(hidden)]
    pub slow_ms_per_chunk: u64,
    /// Reader-side pause until this path exists (tests only).
    #[doc(hidden)]
    pub pause_until_exists: Option<String>,
    /// Receive and check everything but write nothing (benchmarks of the
    /// protocol against `ssh host 'cat >/dev/null'`).
    #[doc(hidden)]
    pub discard: bool,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Bytes written.
    pub size: u64,
    /// The checksum both ends computed.
    pub checksum: u64,
}

/// Progress of a transfer, for callbacks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes the receiver has confirmed.
    pub done: u64,
    /// Total size.
    pub total: u64,
    /// Bytes per second so far.
    pub rate: f64,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The serving context refused or failed the request.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Writing the destination failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data did not match what the sender announced.
    #[error(
        "{path}: received {got} bytes (checksum {got_sum:016x}), expected {want} (checksum {want_sum:016x})"
    )]
    Corrupt {
        /// The destination.
        path: PathBuf,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        want: u64,
        /// Checksum of what arrived.
        got_sum: u64,
        /// Checksum the sender computed.
        want_sum: u64,
    },
    /// The sender disconnected or reported an error mid-transfer.
    #[error("transfer of {path} interrupted: {reason}")]
    Interrupted {
        /// The source path.
        path: String,
        /// What happened.
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Wire messages

#[derive(Debug, Serialize, Deserialize)]
struct FetchArgs {
    path: String,
    sink: Sender,
}

/// The reply to a fetch: what will be streamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FetchReply {
    id: u64,
    size: u64,
    pub(crate) mode: u32,
    pub(crate) mtime: SystemTime,
    ack: Sender,
}

/// Sent on the data channel after the last chunk (typed, so it cannot be
/// mistaken for data, which is raw).
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    End { size: u64, checksum: u64 },
    Error(String),
}

// ---------------------------------------------------------------------------
// The service

/// Serves registered files, chunked and flow-controlled. One per context.
pub struct FileService {
    registered: Mutex<Registered>,
    pump: Arc<Pump>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Registered {
    paths: HashSet<PathBuf>,
    prefixes: Vec<PathBuf>,
    /// Named open files (cached pushes), served by key.
    files: HashMap<String, (Arc<File>, u64, u32, SystemTime)>,
}

impl Service for FileService {
    const NAME: &'static str = "mitogen.file";

    /// Activating it serves nothing until files are registered, so a child
    /// may (push intermediaries are activated by their children's requests).
    fn activation_policy() -> Policy {
        Policy::Any
    }

    fn activate(router: &Router) -> Result<Self, FnError> {
        let router = router.downgrade();
        let pump = Arc::new(Pump::default());
        let ack = router.new_handle();
        let weak = Arc::downgrade(&pump);
        router.add_handler(ack, Policy::Any, move |msg| {
            if let (Some(p), Ok((id, acked))) = (weak.upgrade(), msg.decode::<(u64, u64)>()) {
                p.ack(id, acked);
            }
        });
        *pump.ack.lock() = Some(Sender {
            context: router.id(),
            handle: ack,
        });
        let (p, r) = (pump.clone(), router);
        std::thread::Builder::new()
            .name("mitogen-file-pump".into())
            .spawn(move || p.run(&r))?;
        Ok(Self {
            registered: Mutex::new(Registered::default()),
            pump,
        })
    }
}

impl FileService {
    /// This context's file service (activated if needed).
    ///
    /// # Errors
    /// If mitogen-service was not registered (`mitogen_service::register`).
    pub fn local(router: &Router) -> Result<Arc<Self>, CallErrorKind> {
        local_instance::<Self>(router)
    }

    /// Allows fetching this one file.
    ///
    /// # Errors
    /// If the path does not exist.
    pub fn register_path(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let p = std::fs::canonicalize(path)?;
        self.registered.lock().paths.insert(p);
        Ok(())
    }

    /// Allows fetching anything below this directory (after resolving
    /// symlinks and `..`, so nothing outside it).
    ///
    /// # Errors
    /// If the directory does not exist.
    pub fn register_prefix(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        let p = std::fs::canonicalize(dir)?;
        self.registered.lock().prefixes.push(p);
        Ok(())
    }

    /// Serves an open file under a name (how pushes are cached).
    pub(crate) fn register_file(
        &self,
        key: &str,
        file: Arc<File>,
        size: u64,
        mode: u32,
        mtime: SystemTime,
    ) {
        self.registered
            .lock()
            .files
            .insert(key.to_owned(), (file, size, mode, mtime));
    }

    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.registered.lock().files.contains_key(key)
    }

    /// Progress of the transfers of `path` to `target` this service is
    /// running or has finished (the most recent one).
    pub fn progress(&self, target: ContextId, path: &str) -> Option<Progress> {
        self.pump.progress(target, path)
    }

    fn open(&self, path: &str) -> Result<(Arc<File>, u64, u32, SystemTime), CallErrorKind> {
        if let Some(f) = self.registered.lock().files.get(path) {
            return Ok(f.clone());
        }
        let canon = std::fs::canonicalize(path)
            .map_err(|e| CallErrorKind::PolicyRefused(format!("{path}: not registered ({e})")))?;
        {
            let r = self.registered.lock();
            if !(r.paths.contains(&canon) || r.prefixes.iter().any(|p| canon.starts_with(p))) {
                let escaped = r.prefixes.iter().any(|p| Path::new(path).starts_with(p))
                    || path.contains("..");
                return Err(CallErrorKind::PolicyRefused(if escaped {
                    format!(
                        "{path} resolves to {}, outside every registered prefix",
                        canon.display()
                    )
                } else {
                    format!("{path} is not registered with the file service")
                }));
            }
        }
        let file = File::open(&canon)
            .map_err(|e| CallErrorKind::Failed(format!("{}: {e}", canon.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| CallErrorKind::Failed(e.to_string()))?;
        if !meta.is_file() {
            return Err(CallErrorKind::Failed(format!(
                "{path} is not a regular file"
            )));
        }
        use std::os::unix::fs::MetadataExt;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok((Arc::new(file), meta.len(), meta.mode() & 0o7777, mtime))
    }
}

/// `mitogen.file.fetch`: start streaming a registered file to `sink`.
struct Fetch;
impl ServiceMethod for Fetch {
    type Service = FileService;
    const NAME: &'static str = "fetch";
    type Args = FetchArgs;
    type Output = FetchReply;
    fn policy() -> Policy {
        Policy::Any
    }
    fn call(svc: &FileService, cx: &ServiceCx<'_>, a: FetchArgs) -> Result<FetchReply, FnError> {
        let (file, size, mode, mtime) = svc
            .open(&a.path)
            .map_err(|k| Box::new(KindError(k)) as FnError)?;
        let ack = svc
            .pump
            .ack
            .lock()
            .ok_or("file service has no ack handle")?;
        let id = svc
            .pump
            .start(Transfer::new(cx.caller(), a.sink, a.path, file, size));
        Ok(FetchReply {
            id,
            size,
            mode,
            mtime,
            ack,
        })
    }
}

/// `mitogen.file.register`: a parent lets its child serve a path (for
/// fetching files from a target).
struct RegisterPath;
impl ServiceMethod for RegisterPath {
    type Service = FileService;
    const NAME: &'static str = "register";
    type Args = String;
    type Output = ();
    fn call(svc: &FileService, _: &ServiceCx<'_>, path: String) -> Result<(), FnError> {
        Ok(svc.register_path(path)?)
    }
}

/// `mitogen.file.register_prefix`: a parent lets its child serve a tree.
struct RegisterPrefix;
impl ServiceMethod for RegisterPrefix {
    type Service = FileService;
    const NAME: &'static str = "register_prefix";
    type Args = String;
    type Output = ();
    fn call(svc: &FileService, _: &ServiceCx<'_>, dir: String) -> Result<(), FnError> {
        Ok(svc.register_prefix(dir)?)
    }
}

/// Lets `ctx` serve files below `dir` (it must have parent authority over
/// `ctx`, as a controller has over its tree).
///
/// # Errors
/// The call error.
pub fn register_remote_prefix(ctx: &Context, dir: &str) -> Result<(), CallError> {
    ctx.call_service::<RegisterPrefix>(&dir.to_owned())
}

/// Lets `ctx` serve the file `path`.
///
/// # Errors
/// The call error.
pub fn register_remote_path(ctx: &Context, path: &str) -> Result<(), CallError> {
    ctx.call_service::<RegisterPath>(&path.to_owned())
}

/// An error that displays as its kind (service errors keep their kind's text).
#[derive(Debug)]
struct KindError(CallErrorKind);
impl std::fmt::Display for KindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for KindError {}

// ---------------------------------------------------------------------------
// The pump

struct Transfer {
    id: u64,
    target: ContextId,
    sink: Sender,
    path: String,
    file: Arc<File>,
    size: u64,
    sent: u64,
    acked: u64,
    sum: Checksum,
    window: u64,
    started: Instant,
    last_ack: Instant,
    /// (end offset, send time) of chunks in flight, for RTT samples.
    in_flight: std::collections::VecDeque<(u64, Instant)>,
    end_sent: bool,
    failed: bool,
}

impl Transfer {
    fn new(target: ContextId, sink: Sender, path: String, file: Arc<File>, size: u64) -> Self {
        let now = Instant::now();
        Self {
            id: 0,
            target,
            sink,
            path,
            file,
            size,
            sent: 0,
            acked: 0,
            sum: Checksum::default(),
            window: MIN_WINDOW,
            started: now,
            last_ack: now,
            in_flight: std::collections::VecDeque::new(),
            end_sent: false,
            failed: false,
        }
    }

    fn progress(&self) -> Progress {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        Progress {
            done: self.acked,
            total: self.size,
            rate: self.acked as f64 / secs,
        }
    }
}

#[derive(Default)]
struct Pump {
    state: Mutex<PumpState>,
    wake: Condvar,
    ack: Mutex<Option<Sender>>,
}

#[derive(Default)]
struct PumpState {
    transfers: Vec<Transfer>,
    next_id: u64,
    next_turn: usize,
    finished: HashMap<(ContextId, String), Progress>,
}

impl Pump {
    fn start(&self, mut t: Transfer) -> u64 {
        let mut st = self.state.lock();
        st.next_id += 1;
        t.id = st.next_id;
        let id = t.id;
        st.transfers.push(t);
        self.wake.notify_one();
        id
    }

    fn ack(&self, id: u64, acked: u64) {
        let mut st = self.state.lock();
        if let Some(t) = st.transfers.iter_mut().find(|t| t.id == id) {
            if acked > t.acked && acked <= t.sent {
                // The window tracks twice the bandwidth-delay product: the
                // delivery rate so far times the round trip of the chunk just
                // acknowledged. While the window is the limit, the rate (and
                // so the window) doubles every round trip, like TCP's slow
                // start; once the link is the limit, it settles.
                let now = Instant::now();
                let mut sent_at = None;
                while t.in_flight.front().is_some_and(|(end, _)| *end <= acked) {
                    sent_at = t.in_flight.pop_front().map(|(_, at)| at);
                }
                t.acked = acked;
                t.last_ack = now;
                if let Some(at) = sent_at {
                    let rtt = now.duration_since(at).as_secs_f64();
                    let bdp = (t.progress().rate * rtt * 2.0) as u64;
                    t.window = bdp
                        .clamp(MIN_WINDOW, MAX_WINDOW)
                        .max(t.window.min(MAX_WINDOW));
                }
            }
        }
        self.wake.notify_one();
    }

    fn progress(&self, target: ContextId, path: &str) -> Option<Progress> {
        let st = self.state.lock();
        st.transfers
            .iter()
            .rev()
            .find(|t| t.target == target && t.path == path)
            .map(Transfer::progress)
            .or_else(|| st.finished.get(&(target, path.to_owned())).copied())
    }

    fn run(&self, router: &Router) {
        loop {
            let mut st = self.state.lock();
            if router.is_shut_down() {
                return;
            }
            // Finished, failed, or abandoned (receiver gone or silent).
            let mut i = 0;
            while i < st.transfers.len() {
                let t = &st.transfers[i];
                let gone = !router.is_connected(t.target) || t.last_ack.elapsed() > IDLE_TIMEOUT;
                if (t.end_sent && t.acked == t.size) || t.failed || gone {
                    let t = st.transfers.swap_remove(i);
                    if gone && !t.end_sent {
                        log::debug!("transfer of {} to context {} abandoned", t.path, t.target);
                    }
                    // Progress of finished transfers is kept for callers that
                    // poll after the end; bounded for long-lived controllers.
                    if st.finished.len() >= 4096 {
                        st.finished.clear();
                    }
                    st.finished.insert((t.target, t.path.clone()), t.progress());
                } else {
                    i += 1;
                }
            }
            if st.transfers.is_empty() {
                self.wake.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            let mut progressed = false;
            let n = st.transfers.len();
            let first = st.next_turn % n;
            st.next_turn = st.next_turn.wrapping_add(1);
            for k in 0..n {
                let t = &mut st.transfers[(first + k) % n];
                if t.end_sent || t.failed {
                    continue;
                }
                if t.sent == t.size {
                    let end = Control::End {
                        size: t.size,
                        checksum: t.sum.finish(),
                    };
                    if t.sink.send(router, &end).is_err() {
                        t.failed = true;
                    }
                    t.end_sent = true;
                    progressed = true;
                    continue;
                }
                if t.sent - t.acked >= t.window
                    || router.pending_bytes(t.target).unwrap_or(0) > LINK_QUEUE_CAP
                {
                    continue;
                }
                let len = (t.size - t.sent).min(CHUNK as u64) as usize;
                match mitogen_core::transport::read_payload_at(&t.file, t.sent, len) {
                    Ok(chunk) => {
                        t.sum.update(&chunk);
                        t.sink.send_bytes(router, chunk);
                        t.sent += len as u64;
                        t.in_flight.push_back((t.sent, Instant::now()));
                        progressed = true;
                    }
                    Err(e) => {
                        let _ = t
                            .sink
                            .send(router, &Control::Error(format!("reading {}: {e}", t.path)));
                        t.failed = true;
                    }
                }
            }
            if !progressed {
                // Woken by an ack or a new transfer; a full link queue is
                // polled, since it drains without telling us.
                self.wake.wait_for(&mut st, Duration::from_micros(100));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Receiving

/// An unnamed temp file in the destination's directory that becomes the
/// destination on [`AtomicFile::commit`]; dropped uncommitted, it vanishes.
struct AtomicFile {
    file: File,
    dest: PathBuf,
    /// Set when the system has no O_TMPFILE and a named temp file is used.
    named: Option<PathBuf>,
}

impl AtomicFile {
    fn create(dest: &Path) -> std::io::Result<Self> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        use rustix::fs::{CWD, Mode, OFlags, openat};
        match openat(
            CWD,
            &dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(Self {
                file: File::from(fd),
                dest: dest.to_owned(),
                named: None,
            }),
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL =>
            {
                let tmp = temp_name(dest);
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                Ok(Self {
                    file,
                    dest: dest.to_owned(),
                    named: Some(tmp),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn commit(
        mut self,
        mode: u32,
        owner: Option<(u32, u32)>,
        mtime: Option<SystemTime>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &self.file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(t) = mtime {
            self.file.set_modified(t)?;
        }
        self.file.sync_all()?;
        let tmp = match self.named.take() {
            Some(named) => named,
            None => {
                let tmp = temp_name(&self.dest);
                let fd_path = format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&self.file)
                );
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    fd_path.as_str(),
                    rustix::fs::CWD,
                    &tmp,
                    rustix::fs::AtFlags::SYMLINK_FOLLOW,
                )?;
                tmp
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = self.dest.parent() {
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(named) = &self.named {
            let _ = std::fs::remove_file(named);
        }
    }
}

fn temp_name(dest: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.mitogen-{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Fetches `path` from `from`'s file service into `dest` on this context,
/// atomically.
///
/// # Errors
/// [`TransferError`]; nothing is left at `dest` (or beside it) on error.
pub fn fetch(
    router: &Router,
    from: &Context,
    path: &str,
    dest: &Path,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    let wrap = |source| TransferError::Write {
        path: dest.to_owned(),
        source,
    };
    if opts.discard {
        let mut sink = std::io::sink();
        return receive(router, from, path, &mut sink, opts).map(|(_, stat)| stat);
    }
    let mut out = AtomicFile::create(dest).map_err(wrap)?;
    let (meta, stat) = receive(router, from, path, &mut out.file, opts)?;
    out.commit(
        opts.mode.unwrap_or(meta.mode),
        opts.owner,
        opts.mtime.or(Some(meta.mtime)),
    )
    .map_err(wrap)?;
    Ok(stat)
}

/// Fetches `path` into an open file (a push cache); returns the source's
/// metadata too.
pub(crate) fn fetch_to_file(
    router: &Router,
    from: &Context,
    path: &str,
    file: &mut File,
) -> Result<(FetchReply, FileStat), TransferError> {
    receive(router, from, path, file, &WriteOptions::default())
}

fn receive(
    router: &Router,
    from: &Context,
    path: &str,
    out: &mut dyn std::io::Write,
    opts: &WriteOptions,
) -> Result<(FetchReply, FileStat), TransferError> {
    let wrap = |source| TransferError::Write {
        path: PathBuf::from(path),
        source,
    };
    let rx = router.receiver_with(Policy::Respondent(from.id()));
    let meta = from.call_service::<Fetch>(&FetchArgs {
        path: path.to_owned(),
        sink: rx.sender(),
    })?;
    let mut sum = Checksum::default();
    let mut got = 0u64;
    let mut acked = 0u64;
    let interrupted = |reason: String| TransferError::Interrupted {
        path: path.to_owned(),
        reason,
    };
    loop {
        if let Some(flag) = &opts.pause_until_exists {
            while !Path::new(flag).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let msg: Message = rx
            .recv_timeout(IDLE_TIMEOUT)
            .map_err(|e| interrupted(e.to_string()))?;
        if msg.enc == mitogen_core::Enc::BIN {
            std::io::Write::write_all(out, &msg.data).map_err(wrap)?;
            sum.update(&msg.data);
            got += msg.data.len() as u64;
            // Acknowledge every ACK_EVERY bytes (and at the end): fewer
            // messages for the programs relaying them (ssh, sshd) to wake for.
            if (got - acked >= ACK_EVERY || got == meta.size)
                && meta.ack.send(router, &(meta.id, got)).is_err()
            {
                return Err(interrupted("cannot acknowledge".into()));
            }
            if got - acked >= ACK_EVERY || got == meta.size {
                acked = got;
            }
            if opts.slow_ms_per_chunk > 0 {
                std::thread::sleep(Duration::from_millis(opts.slow_ms_per_chunk));
            }
            continue;
        }
        match msg
            .decode::<Control>()
            .map_err(|e| interrupted(e.to_string()))?
        {
            Control::Error(e) => return Err(interrupted(e)),
            Control::End { size, checksum } => {
                if size != got || checksum != sum.finish() {
                    return Err(TransferError::Corrupt {
                        path: PathBuf::from(path),
                        got,
                        want: size,
                        got_sum: sum.finish(),
                        want_sum: checksum,
                    });
                }
                return Ok((meta, FileStat { size, checksum }));
            }
        }
    }
}

/// Writes `data` to `path` atomically (temp file, fsync, rename).
///
/// # Errors
/// The OS error, with nothing left behind.
pub fn write_atomic(path: &Path, data: &[u8], opts: &WriteOptions) -> std::io::Result<FileStat> {
    let mut out = AtomicFile::create(path)?;
    std::io::Write::write_all(&mut out.file, data)?;
    let mut sum = Checksum::default();
    sum.update(data);
    out.commit(opts.mode.unwrap_or(0o644), opts.owner, opts.mtime)?;
    Ok(FileStat {
        size: data.len() as u64,
        checksum: sum.finish(),
    })
}

// ---------------------------------------------------------------------------
// Functions the target runs, and the conveniences that call them

/// `mitogen.file.write`: writes inline bytes atomically.
struct WriteFile;
impl ServiceMethod for WriteFile {
    type Service = FileService;
    const NAME: &'static str = "write";
    type Args = (String, Blob, WriteOptions);
    type Output = FileStat;
    fn call(
        _: &FileService,
        _: &ServiceCx<'_>,
        (path, data, opts): Self::Args,
    ) -> Result<FileStat, FnError> {
        Ok(write_atomic(Path::new(&path), &data, &opts)?)
    }
}

/// Fetches a file from another context's file service into the called
/// one: `(from, path, dest, options)`. What [`put_file`] asks the target to
/// do; call it (with [`ServiceExt::call_service`]) to copy between any two
/// contexts. It runs on a service worker, so the context's main thread
/// stays free for calls during the transfer.
#[derive(Debug)]
pub struct FetchFrom;
impl ServiceMethod for FetchFrom {
    type Service = FileService;
    const NAME: &'static str = "fetch_from";
    type Args = (ContextId, String, String, WriteOptions);
    type Output = FileStat;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (from, path, dest, opts): Self::Args,
    ) -> Result<FileStat, FnError> {
        let from = cx.router().context(from);
        Ok(fetch(cx.router(), &from, &path, Path::new(&dest), &opts)?)
    }
}

pub(crate) fn register_builtin(s: &mut Services) {
    s.add::<Fetch>()
        .add::<RegisterPath>()
        .add::<RegisterPrefix>()
        .add::<WriteFile>()
        .add::<FetchFrom>()
        .add::<crate::push::Ensure>()
        .add::<crate::push::PushFetch>();
}

fn kind_err(ctx: &Context, what: &str, kind: CallErrorKind) -> TransferError {
    TransferError::Call(CallError {
        context: ctx.id(),
        context_name: ctx.name().to_owned(),
        function: what.to_owned(),
        kind,
    })
}

/// Copies local file `src` to `dest` on `target`. Files up to
/// [`INLINE_MAX`] go in one call; larger ones stream from this context's
/// file service, with `progress` called about every 100 ms.
///
/// # Errors
/// [`TransferError`]; nothing is left at `dest` on error.
pub fn put_file(
    router: &Router,
    target: &Context,
    src: &Path,
    dest: &str,
    opts: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<FileStat, TransferError> {
    let wrap = |source| TransferError::Write {
        path: src.to_owned(),
        source,
    };
    let meta = std::fs::metadata(src).map_err(wrap)?;
    if meta.len() <= INLINE_MAX {
        let data = std::fs::read(src).map_err(wrap)?;
        use std::os::unix::fs::MetadataExt;
        let mut o = opts.clone();
        o.mode = o.mode.or_else(|| Some(meta.mode() & 0o7777));
        o.mtime = o.mtime.or_else(|| meta.modified().ok());
        let stat = target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), o))?;
        progress(Progress {
            done: stat.size,
            total: stat.size,
            rate: 0.0,
        });
        return Ok(stat);
    }
    let svc = FileService::local(router).map_err(|k| kind_err(target, "put_file", k))?;
    svc.register_path(src).map_err(wrap)?;
    let key = std::fs::canonicalize(src)
        .map_err(wrap)?
        .display()
        .to_string();
    let pending = target.call_service_async::<FetchFrom>(&(
        router.id(),
        key.clone(),
        dest.to_owned(),
        opts.clone(),
    ))?;
    loop {
        match pending.receiver().recv_timeout(Duration::from_millis(100)) {
            Err(mitogen_core::RecvError::Timeout) => {
                if let Some(p) = svc.progress(target.id(), &key) {
                    progress(p);
                }
            }
            r => {
                let stat = pending.finish(r)?;
                if let Some(p) = svc.progress(target.id(), &key) {
                    progress(Progress {
                        done: stat.size,
                        ..p
                    });
                }
                return Ok(stat);
            }
        }
    }
}

/// Writes `data` to `dest` on `target` atomically, in one call.
///
/// # Errors
/// [`TransferError::Call`] with what the target reported.
pub fn put_bytes(
    target: &Context,
    dest: &str,
    data: Vec<u8>,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    Ok(target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), opts.clone()))?)
}

/// Copies `src` on `source` to local `dest` (the source serves it for this).
///
/// # Errors
/// [`TransferError`].
pub fn fetch_file(
    router: &Router,
    source: &Context,
    src: &str,
    dest: &Path,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    source.call_service::<RegisterPath>(&src.to_owned())?;
    fetch(router, source, src, dest, opts)
}
