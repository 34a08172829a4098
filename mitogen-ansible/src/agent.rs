//! What runs in the target context: the registered [`Function`]s, the
//! per-user payload cache and the temp dirs. The warm Python fork servers
//! are in [`crate::forkserver`], plain processes in [`crate::process`].

use crate::forkserver::{PyRequest, Reaper, Servers};
use crate::process::{self, ProcSpec};
use mitogen_core::layer::LayerRouter;
use mitogen_core::{CallCx, FnError, Function, Registry};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Registers the runner's functions, and `mitogen-service` (its file
/// transfers; do not register that again); call it in
/// `mitogen_core::init`'s registration function (both ends run the same
/// registration).
pub fn register(reg: &mut Registry) {
    mitogen_service::register(reg);
    reg.add::<Discover>()
        .add::<RunPython>()
        .add::<RunProcess>()
        .add::<MakeTmp>()
        .add::<RemoveTmp>()
        .add::<Stage>()
        .add::<ExpandUser>()
        .add::<QuickStat>();
}

/// What a module process produced, before any parsing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RawRun {
    pub(crate) rc: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Killed at its deadline.
    pub(crate) timed_out: bool,
    /// Killed because its output passed the size limit.
    pub(crate) too_large: bool,
    /// Where the target's time went (µs), for [`crate::Timings`].
    #[serde(default)]
    pub(crate) agent_us: u64,
    /// The module process's life (fork to exit), µs.
    #[serde(default)]
    pub(crate) child_us: u64,
    /// The tmp dir a [`TmpMode::Fresh`] call made and kept (`keep`).
    #[serde(default)]
    pub(crate) tmp: Option<String>,
}

/// Runs interpreter discovery's one command (`echo FOUND; command -v ...;
/// echo ENDFOUND`) and returns its stdout.
pub(crate) struct Discover;
impl Function for Discover {
    const NAME: &'static str = "mitogen-ansible::discover";
    type Args = Vec<String>;
    type Output = String;
    fn call(_: &CallCx<'_>, fallback: Vec<String>) -> Result<String, FnError> {
        let mut cmd = String::from("echo FOUND;");
        for p in &fallback {
            cmd.push_str(&format!(" command -v {};", crate::pycompat::shlex_quote(p)));
        }
        cmd.push_str(" echo ENDFOUND");
        let run = process::run(&ProcSpec {
            command: cmd,
            timeout: Duration::from_secs(60),
            ..ProcSpec::default()
        })?;
        Ok(String::from_utf8_lossy(&run.stdout).into_owned())
    }
}

/// One file of a payload: its path in the tree and its content hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub(crate) struct FileRef {
    pub(crate) rel: String,
    pub(crate) sha256: String,
}

/// A new-style Python module task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PyTask {
    pub(crate) interpreter: String,
    /// Names the tree the payload lands in (one per controller install).
    pub(crate) tree: String,
    pub(crate) files: Vec<FileRef>,
    /// Content for hashes the target may lack.
    pub(crate) blobs: Vec<(String, Vec<u8>)>,
    pub(crate) fqn: String,
    /// The remote file name ansible would use (`AnsiballZ_ping.py`).
    pub(crate) remote_name: String,
    /// `{"ANSIBLE_MODULE_ARGS": {...}}`, [`TMPDIR_TOKEN`] for the tmp dir.
    pub(crate) params: String,
    pub(crate) tmp: TmpMode,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
    pub(crate) timeout_ms: u64,
    /// The module's soft `RLIMIT_NOFILE` (0: inherited).
    #[serde(default)]
    pub(crate) rlimit_nofile: u64,
}

/// How a task's remote tmp dir is made (§2.1 of ANSIBLE-PROTOCOL.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TmpSpec {
    /// `remote_tmp`, unexpanded (`~/.ansible/tmp`).
    pub(crate) remote_tmp: String,
    /// Become to an unprivileged user: under a system tmp dir
    /// (`remote_tmp` if it is `/var/tmp` or `/tmp`, else `/var/tmp`).
    pub(crate) system: bool,
    /// `keep_remote_files`: left in place after the call.
    pub(crate) keep: bool,
    /// Become from this login user (not to an unprivileged user): as
    /// ansible-core expands `remote_tmp` with `~<login user>` and makes the
    /// dir as that user, the dir goes under the login user's home and is
    /// given to them (where this context may chown).
    pub(crate) login_user: Option<String>,
}

/// Which tmp dir a call uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TmpMode {
    /// A fresh one for this call, removed after it unless `keep`.
    Fresh(TmpSpec),
    /// One an action made earlier (path with its `/`): used, and removed
    /// after the call when `remove` (the action's last use of it).
    Shared { path: String, remove: bool },
}

impl TmpMode {
    fn open(&self) -> std::io::Result<TmpDir> {
        match self {
            Self::Fresh(spec) => TmpDir::create(spec),
            Self::Shared { path, remove } => Ok(TmpDir {
                path: PathBuf::from(path.trim_end_matches('/')),
                owned: *remove,
            }),
        }
    }
}

/// Makes an action's tmp dir; returns its path with a trailing `/`.
pub(crate) struct MakeTmp;
impl Function for MakeTmp {
    const NAME: &'static str = "mitogen-ansible::make-tmp";
    type Args = TmpSpec;
    type Output = String;
    fn call(_: &CallCx<'_>, spec: TmpSpec) -> Result<String, FnError> {
        let mut t = TmpDir::create(&spec)?;
        t.owned = false;
        Ok(t.path_slash())
    }
}

/// `rm -f -r <T>/`: removes an action's tmp dir (only names with `-tmp-`,
/// as `_remove_tmp_path`).
pub(crate) struct RemoveTmp;
impl Function for RemoveTmp {
    const NAME: &'static str = "mitogen-ansible::remove-tmp";
    type Args = String;
    type Output = ();
    fn call(_: &CallCx<'_>, path: String) -> Result<(), FnError> {
        if path.contains("-tmp-") {
            match std::fs::remove_dir_all(path.trim_end_matches('/')) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// `_remote_expand_user`: `~` and `~/x` with this user's home.
pub(crate) struct ExpandUser;
impl Function for ExpandUser {
    const NAME: &'static str = "mitogen-ansible::expand-user";
    type Args = String;
    type Output = String;
    fn call(_: &CallCx<'_>, path: String) -> Result<String, FnError> {
        let home = || {
            home_dir()
                .or_else(|| std::env::current_dir().ok())
                .map(|h| h.display().to_string())
                .unwrap_or_default()
        };
        Ok(if path == "~" {
            home()
        } else if let Some(rest) = path.strip_prefix("~/") {
            format!("{}/{rest}", home().trim_end_matches('/'))
        } else {
            path
        })
    }
}

/// What `_execute_remote_stat` asks the `stat` module for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatReq {
    pub(crate) path: String,
    pub(crate) follow: bool,
    pub(crate) checksum: bool,
}

/// The fields of the `stat` module's answer the actions read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QuickStatOut {
    pub(crate) exists: bool,
    pub(crate) isdir: bool,
    /// The sha1 of a readable regular file, when asked.
    pub(crate) checksum: Option<String>,
}

/// The `stat` module's answer for the plain cases (an absolute path that
/// is missing, a directory or a regular file, without `~` or `$`), computed
/// as the module does (`lstat`/`stat`, `access(R_OK)`, sha1 of the bytes);
/// `None` for everything else (symlinks kept as such, special files, any
/// error but ENOENT), which the caller then asks the module for, so its
/// exact answer and failure messages stay the module's.
pub(crate) struct QuickStat;
impl Function for QuickStat {
    const NAME: &'static str = "mitogen-ansible::quick-stat";
    type Args = StatReq;
    type Output = Option<QuickStatOut>;
    fn call(_: &CallCx<'_>, r: StatReq) -> Result<Option<QuickStatOut>, FnError> {
        // `type='path'` expands `~` and `$VAR`; a relative path is the
        // module's cwd's: leave those to the module.
        if !r.path.starts_with('/') || r.path.contains('$') {
            return Ok(None);
        }
        let meta = if r.follow {
            std::fs::metadata(&r.path)
        } else {
            std::fs::symlink_metadata(&r.path)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
                return Ok(Some(QuickStatOut {
                    exists: false,
                    isdir: false,
                    checksum: None,
                }));
            }
            Err(_) => return Ok(None),
        };
        if meta.is_dir() {
            return Ok(Some(QuickStatOut {
                exists: true,
                isdir: true,
                checksum: None,
            }));
        }
        if !meta.is_file() {
            return Ok(None);
        }
        let readable = rustix::fs::access(&r.path, rustix::fs::Access::READ_OK).is_ok();
        let checksum = if r.checksum && readable {
            match sha1_file(Path::new(&r.path)) {
                Ok(h) => Some(h),
                Err(_) => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some(QuickStatOut {
            exists: true,
            isdir: false,
            checksum,
        }))
    }
}

/// `ansible.utils.hashing.checksum`: the sha1 hex of a file's bytes.
pub(crate) fn sha1_file(path: &Path) -> std::io::Result<String> {
    use sha1::{Digest, Sha1};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Payload files to have in a tree of the cache (for modules run as
/// their own processes: async jobs, `keep_remote_files`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageReq {
    pub(crate) tree: String,
    pub(crate) files: Vec<FileRef>,
    pub(crate) blobs: Vec<(String, Vec<u8>)>,
}

/// The answer to a [`StageReq`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StageOutcome {
    /// These hashes are missing: send them and ask again.
    NeedBlobs(Vec<String>),
    /// The tree's path on the target.
    Ready(String),
}

/// Links payload files into a cache tree.
pub(crate) struct Stage;
impl Function for Stage {
    const NAME: &'static str = "mitogen-ansible::stage";
    type Args = StageReq;
    type Output = StageOutcome;
    fn call(_: &CallCx<'_>, req: StageReq) -> Result<StageOutcome, FnError> {
        let cache = Cache::open()?;
        match cache.stage(&req.tree, &req.files, &req.blobs)? {
            Err(missing) => Ok(StageOutcome::NeedBlobs(missing)),
            Ok((tree, _)) => Ok(StageOutcome::Ready(tree.display().to_string())),
        }
    }
}

/// The answer to a [`PyTask`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PyOutcome {
    /// These hashes are missing on the target: send them and ask again.
    NeedBlobs(Vec<String>),
    /// The module ran.
    Ran(RawRun),
}

/// Runs a new-style module in the warm fork server for its interpreter.
pub(crate) struct RunPython;
impl Function for RunPython {
    const NAME: &'static str = "mitogen-ansible::run-python";
    type Args = PyTask;
    type Output = PyOutcome;
    fn call(cx: &CallCx<'_>, task: PyTask) -> Result<PyOutcome, FnError> {
        let t0 = std::time::Instant::now();
        let mut r = Self::run(cx, task)?;
        if let PyOutcome::Ran(run) = &mut r {
            run.agent_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        }
        Ok(r)
    }
}

/// Payloads this agent has linked into a tree (by [`payload_key`]): the
/// next task of the same module skips the ~3 stats per file of
/// [`Cache::stage`] while the tree dir is still there.
#[derive(Default)]
struct Staged(parking_lot::Mutex<std::collections::HashMap<u64, PathBuf>>);

/// FNV-1a over a payload's tree id and files.
fn payload_key(tree: &str, files: &[FileRef]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    eat(tree.as_bytes());
    for f in files {
        eat(f.rel.as_bytes());
        eat(f.sha256.as_bytes());
    }
    h
}

impl RunPython {
    fn run(cx: &CallCx<'_>, task: PyTask) -> Result<PyOutcome, FnError> {
        let staged = cx.router().extension(Staged::default);
        let key = payload_key(&task.tree, &task.files);
        let known = staged.0.lock().get(&key).cloned().filter(|t| t.is_dir());
        let (tree, replaced) = match known {
            Some(tree) if task.blobs.is_empty() => (tree, false),
            _ => {
                let cache = Cache::open()?;
                match cache.stage(&task.tree, &task.files, &task.blobs)? {
                    Err(missing) => return Ok(PyOutcome::NeedBlobs(missing)),
                    Ok((tree, replaced)) => {
                        staged.0.lock().insert(key, tree.clone());
                        (tree, replaced)
                    }
                }
            }
        };
        let tmp = task.tmp.open()?;
        let params = task.params.replace(TMPDIR_TOKEN, &tmp.path_slash());
        let servers = cx.router().extension(Servers::default);
        let req = PyRequest {
            fqn: task.fqn.clone(),
            argv0: format!("{}{}", tmp.path_slash(), task.remote_name),
            params,
            env: task.env.clone(),
            cwd: task.cwd.clone().or_else(login_dir),
            timeout: Duration::from_millis(task.timeout_ms),
            rlimit_nofile: task.rlimit_nofile,
        };
        // Weak while the task runs: the router's extension map must hold
        // the only strong reference, so that shutting down runs it.
        let reaper = std::sync::Arc::downgrade(&cx.router().extension(Reaper::default));
        let run = servers.run(&task.interpreter, &tree, replaced, &req, &reaper);
        let kept = (!tmp.owned).then(|| tmp.path_slash());
        tmp.remove();
        match run {
            Ok(mut run) => {
                if matches!(task.tmp, TmpMode::Fresh(_)) {
                    run.tmp = kept;
                }
                Ok(PyOutcome::Ran(run))
            }
            Err(crate::forkserver::ServerError::Spawn(e))
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                // Let the shell say it, as it does under ansible-core.
                let tmp = task.tmp.open()?;
                let cmd = format!(
                    "{} && sleep 0",
                    crate::pycompat::shlex_join(&[
                        task.interpreter.clone(),
                        format!("{}{}", tmp.path_slash(), task.remote_name),
                    ])
                );
                let run = process::run(&ProcSpec {
                    command: cmd,
                    cwd: task.cwd.clone().or_else(login_dir),
                    timeout: Duration::from_millis(task.timeout_ms),
                    ..ProcSpec::default()
                });
                tmp.remove();
                Ok(PyOutcome::Ran(run?))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A module (or command) run as its own process: old-style, WANT_JSON,
/// JSON-args, binary modules, `raw` and `script`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProcTask {
    /// Written into the tmp dir before running: `(name, bytes, what)`.
    pub(crate) files: Vec<(String, Vec<u8>, FileKind)>,
    /// The shell command (`/bin/sh -c` runs it); [`TMPDIR_TOKEN`] stands for the tmp dir.
    pub(crate) command: String,
    /// The tmp dir for the files (`None`: no files, e.g. `raw`).
    pub(crate) tmp: Option<TmpMode>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
    pub(crate) timeout_ms: u64,
}

/// What a file of a [`ProcTask`] is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum FileKind {
    /// Copied as is.
    Plain,
    /// Rendered on the controller with [`TMPDIR_TOKEN`] for the tmp dir
    /// path (args files, JSON-args modules): the token is replaced here.
    Templated,
}

/// Stands for the task's tmp dir (with its trailing `/`) in commands,
/// args and templated files until the target has made the dir.
pub(crate) const TMPDIR_TOKEN: &str = "@MITOGEN_TMPDIR@/";

/// Runs a [`ProcTask`].
pub(crate) struct RunProcess;
impl Function for RunProcess {
    const NAME: &'static str = "mitogen-ansible::run-process";
    type Args = ProcTask;
    type Output = RawRun;
    fn call(_: &CallCx<'_>, task: ProcTask) -> Result<RawRun, FnError> {
        let t0 = std::time::Instant::now();
        let mut run = Self::run(&task)?;
        run.agent_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(run)
    }
}

impl RunProcess {
    fn run(task: &ProcTask) -> Result<RawRun, FnError> {
        let tmp = match &task.tmp {
            Some(mode) => Some((mode.open()?, mode)),
            None => None,
        };
        let result = (|| {
            let mut command = task.command.clone();
            if let Some((tmp, _)) = &tmp {
                let dir = tmp.path_slash();
                for (name, data, kind) in &task.files {
                    let bytes = match kind {
                        FileKind::Plain => data.clone(),
                        FileKind::Templated => {
                            replace_bytes(data, TMPDIR_TOKEN.as_bytes(), dir.as_bytes())
                        }
                    };
                    let path = tmp.path.join(name);
                    std::fs::write(&path, &bytes)?;
                    // chmod u+rwx, as _fixup_perms2 does.
                    let mode = std::fs::metadata(&path)?.permissions().mode() | 0o700;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                }
                command = command.replace(TMPDIR_TOKEN, &dir);
            }
            let t = std::time::Instant::now();
            let mut run = process::run(&ProcSpec {
                command,
                env: task.env.clone(),
                cwd: task.cwd.clone().or_else(login_dir),
                timeout: Duration::from_millis(task.timeout_ms),
            })?;
            run.child_us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
            Ok::<_, std::io::Error>(run)
        })();
        let mut result = result?;
        if let Some((tmp, mode)) = tmp {
            if matches!(mode, TmpMode::Fresh(_)) && !tmp.owned {
                result.tmp = Some(tmp.path_slash());
            }
            tmp.remove();
        }
        Ok(result)
    }
}

/// `data` with every `from` replaced by `to`.
fn replace_bytes(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// The per-user payload cache: `blobs/<sha256>` (written atomically, so a
/// present name is a complete file) and `trees/<id>/<rel>` hard links to them.
struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Stores `blobs`, then links `files` into tree `id`: `Err` lists the
    /// hashes still missing; `Ok` has the tree and whether a file changed.
    fn stage(
        &self,
        id: &str,
        files: &[FileRef],
        blobs: &[(String, Vec<u8>)],
    ) -> std::io::Result<Result<(PathBuf, bool), Vec<String>>> {
        for (sha, data) in blobs {
            self.put_blob(sha, data)?;
        }
        let missing: Vec<String> = files
            .iter()
            .filter(|f| !self.blob(&f.sha256).exists())
            .map(|f| f.sha256.clone())
            .collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let tree = self.tree(id);
        let mut replaced = false;
        for f in files {
            replaced |= self.link(&tree, f)?;
        }
        Ok(Ok((tree, replaced)))
    }

    fn open() -> std::io::Result<Self> {
        let uid = rustix::process::getuid().as_raw();
        let mut candidates = Vec::new();
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            candidates.push(PathBuf::from(x).join("mitogen-ansible"));
        }
        if let Some(home) = home_dir() {
            candidates.push(home.join(".cache/mitogen-ansible"));
        }
        candidates.push(std::env::temp_dir().join(format!("mitogen-ansible-{uid}")));
        let mut last = None;
        for root in candidates {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join("blobs"))
            {
                Ok(()) => {
                    // Another user's dir in /tmp must not be trusted.
                    if std::fs::metadata(&root).map(|m| m.uid()).ok() == Some(uid) {
                        return Ok(Self { root });
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no usable cache directory")))
    }

    fn blob(&self, sha: &str) -> PathBuf {
        self.root.join("blobs").join(sanitize(sha))
    }

    fn put_blob(&self, sha: &str, data: &[u8]) -> std::io::Result<()> {
        let path = self.blob(sha);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}", unique()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }

    fn tree(&self, id: &str) -> PathBuf {
        self.root.join("trees").join(sanitize(id))
    }

    /// Makes `tree/rel` the blob; true if another file was there before.
    fn link(&self, tree: &Path, f: &FileRef) -> std::io::Result<bool> {
        if f.rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(std::io::Error::other(format!(
                "bad payload path {:?}",
                f.rel
            )));
        }
        let blob = self.blob(&f.sha256);
        let dst = tree.join(&f.rel);
        let blob_ino = std::fs::metadata(&blob)?.ino();
        let existing = std::fs::metadata(&dst).ok();
        if existing.as_ref().map(MetadataExt::ino) == Some(blob_ino) {
            return Ok(false);
        }
        if let Some(parent) = dst.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let tmp = dst.with_extension(format!("tmp{}", unique()));
        if std::fs::hard_link(&blob, &tmp).is_err() {
            std::fs::copy(&blob, &tmp)?;
        }
        std::fs::rename(&tmp, &dst)?;
        Ok(existing.is_some())
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// A random part for temp names (a tmp dir's is ansible-core's
/// `random.randint(0, 2**48)`).
fn unique() -> u64 {
    fastrand::u64(..1 << 48)
}

/// `mkdir -p` under `umask 77`, new dirs given to `owner`.
fn mkdir_p(dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_p(parent, owner)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Where a task runs when the caller names no directory: the agent's own
/// working directory, which is the ssh login's (its home) and which an
/// agent started through sudo/su/doas inherits, as a module run by
/// ansible-core's `sudo -H` keeps the login's. The agent never changes it.
/// `None` (then the home) if it is gone or cannot be read.
pub(crate) fn login_dir() -> Option<String> {
    std::env::current_dir()
        .ok()
        .filter(|d| d.is_dir())
        .map(|d| d.display().to_string())
}

/// The agent user's home: the user database's for its uid, else `$HOME`.
pub(crate) fn home_dir() -> Option<PathBuf> {
    mitogen_core::layer::user_by_uid(rustix::process::getuid().as_raw())
        .map(|u| u.home)
        .filter(|h| !h.as_os_str().is_empty())
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
}

/// A task's remote tmp dir, `ansible-tmp-<time.time()>-<pid>-<rand>`
/// under the expanded `remote_tmp` (or a system tmp dir, see [`TmpSpec`]),
/// mode 0700 (ansible-core's `mkdtemp` under `umask 77`).
struct TmpDir {
    path: PathBuf,
    /// Removed by [`TmpDir::remove`] (a fresh dir without `keep`).
    owned: bool,
}

/// ansible-core's `system_tmpdirs`.
const SYSTEM_TMPDIRS: [&str; 2] = ["/var/tmp", "/tmp"];

impl TmpDir {
    fn create(spec: &TmpSpec) -> std::io::Result<Self> {
        let remote_tmp = spec.remote_tmp.as_str();
        let me = rustix::process::getuid().as_raw();
        // (uid, gid) to give new dirs to: the login user's, when this
        // context is root acting for them.
        let login = spec
            .login_user
            .as_deref()
            .filter(|_| !spec.system && me == 0)
            .and_then(mitogen_core::layer::user_by_name)
            .filter(|p| p.uid != me);
        let home = match &login {
            Some(p) => Some(p.home.clone()),
            None => home_dir(),
        };
        let expanded = match remote_tmp.strip_prefix("~/") {
            Some(rest) => home.unwrap_or_else(|| PathBuf::from("/")).join(rest),
            None if remote_tmp == "~" => home.unwrap_or_else(|| PathBuf::from("/")),
            None => PathBuf::from(remote_tmp),
        };
        let base = if spec.system {
            let t = remote_tmp.trim_end_matches('/');
            PathBuf::from(
                SYSTEM_TMPDIRS
                    .iter()
                    .find(|d| **d == t)
                    .unwrap_or(&SYSTEM_TMPDIRS[0]),
            )
        } else {
            expanded
        };
        let owner = login.as_ref().map(|p| (p.uid, p.gid));
        mkdir_p(&base, owner)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Python's repr of time.time() is the shortest round-trip form, as Rust's Display.
        let name = format!(
            "ansible-tmp-{}-{}-{}",
            now.as_secs_f64(),
            std::process::id(),
            unique() % (1 << 48)
        );
        let path = base.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        Ok(Self {
            path,
            owned: !spec.keep,
        })
    }

    fn path_slash(&self) -> String {
        format!("{}/", self.path.display())
    }

    fn remove(self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
