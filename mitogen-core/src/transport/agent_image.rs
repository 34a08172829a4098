//! The agent a controller ships: which bytes, their SHA-256 and their
//! compressed forms, derived once per binary and remembered.
//!
//! A start against a warm target needs only the agent's hash and size. Both
//! are kept in a per-user controller cache (`$XDG_CACHE_HOME/mitogen-rs/controller`,
//! else `~/.cache/mitogen-rs/controller`, mode 0700, used only when owned by
//! the user and not writable by others), keyed by the source binary's
//! identity: device, inode, size and mtime (nanoseconds). So a fresh
//! controller process reads one small file, not its 10 MiB binary. On a
//! miss ([`Image::payload`]) the shipped binary and each compressed form are
//! made once and stored there too.
//!
//! The shipped binary is the source with its debug info removed
//! (`objcopy --strip-debug`, when the controller has binutils): a release
//! build with line tables shrinks from ~12 MiB to ~1.8 MiB, and its symbols
//! stay, so an agent's panic messages and backtraces still name functions.
//! Without `objcopy` (or if it fails, e.g. on a non-ELF binary) the source
//! is shipped as it is. Compression uses the controller's own `zstd`, `xz`
//! or `gzip`, whichever the target can undo, in that order (zstd decodes
//! fastest; xz is ~7% smaller but 4x slower to decode).
//!
//! An agent process that connects further hops (`via`) derives all this in
//! memory and writes nothing to the target's disk.

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// Hex SHA-256 of everything `r` yields (read in 1 MiB pieces).
pub(crate) fn sha256_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex(&h.finalize()), n))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How an upload is encoded on the wire; the target names the decoders it
/// has, the controller picks the first it can also produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Encoding {
    Zstd,
    Xz,
    Gzip,
    Raw,
}

impl Encoding {
    /// Best first.
    pub(crate) const PREFERENCE: [Self; 3] = [Self::Zstd, Self::Xz, Self::Gzip];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Gzip => "gzip",
            Self::Raw => "raw",
        }
    }

    fn compressor(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Self::Zstd => Some(("zstd", &["-19", "-q", "-c"])),
            Self::Xz => Some(("xz", &["-6", "-c"])),
            Self::Gzip => Some(("gzip", &["-9", "-c"])),
            Self::Raw => None,
        }
    }
}

/// Where the controller cache lives, as [`super::bootstrap::Bootstrap`] says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum CacheSetting {
    /// `$XDG_CACHE_HOME/mitogen-rs/controller` (or `~/.cache/...`).
    Default,
    /// This directory (on the controller; agents keep none).
    Dir(PathBuf),
    /// In memory only.
    Off,
}

impl CacheSetting {
    fn dir(&self) -> Option<PathBuf> {
        let dir = match self {
            // An agent connecting further hops writes nothing on its host
            // (a path the controller named means nothing there).
            _ if crate::is_agent() => return None,
            Self::Off => return None,
            Self::Dir(d) => d.clone(),
            Self::Default => return controller_cache_dir("controller"),
        };
        usable_dir(&dir).then_some(dir)
    }
}

/// `$XDG_CACHE_HOME/mitogen-rs/NAME` (or `~/.cache/mitogen-rs/NAME`),
/// created 0700 if needed; `None` in an agent, without a home, or when the
/// directory is not this user's alone (another user could plant entries).
///
/// Layers keep what they work out once per controller there: the agent
/// images under `controller`, mitogen-ansible its ansible-core facts.
///
/// ```
/// if let Some(dir) = mitogen_core::layer::controller_cache_dir("my-layer") {
///     assert!(dir.ends_with("mitogen-rs/my-layer"));
/// }
/// ```
pub fn controller_cache_dir(name: &str) -> Option<PathBuf> {
    if crate::is_agent() {
        return None;
    }
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })?
        .join("mitogen-rs")
        .join(name);
    usable_dir(&dir).then_some(dir)
}

/// Creates `dir` (0700) if needed; true if it is a directory owned by this
/// user that nobody else can write.
fn usable_dir(dir: &Path) -> bool {
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            m.is_dir()
                && m.uid() == rustix::process::geteuid().as_raw()
                && m.permissions().mode() & 0o022 == 0
        }
        Err(_) => false,
    }
}

/// The agent shipped for one source binary (one identity of it).
#[derive(Debug)]
pub(crate) struct Image {
    src: PathBuf,
    key: String,
    strip: bool,
    dir: Option<PathBuf>,
    /// The controller cache's file naming this image's hash and size.
    meta_name: String,
    /// SHA-256 of the shipped bytes, lowercase hex.
    pub(crate) sha256: String,
    /// Size of the shipped bytes.
    pub(crate) size: u64,
    /// The shipped bytes, once read or made.
    bytes: OnceLock<Arc<Vec<u8>>>,
    payloads: Mutex<HashMap<Encoding, Option<Arc<Vec<u8>>>>>,
}

/// Source path, identity and whether stripped.
type ImageKey = (PathBuf, String, bool);

/// Images this process has identified.
static IMAGES: OnceLock<Mutex<HashMap<ImageKey, Arc<Image>>>> = OnceLock::new();

/// `src`'s identity: device, inode, size and mtime in nanoseconds.
fn identity(m: &std::fs::Metadata) -> String {
    format!(
        "{:x}-{:x}-{}-{}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    )
}

impl Image {
    /// The image for `src`; the second value is how many bytes of agent
    /// this call read (0 when this process or the controller cache knew it).
    pub(crate) fn identify(
        src: &Path,
        strip: bool,
        cache: &CacheSetting,
    ) -> std::io::Result<(Arc<Self>, u64)> {
        let key = identity(&std::fs::metadata(src)?);
        let images = IMAGES.get_or_init(Default::default);
        let memo = (src.to_owned(), key.clone(), strip);
        if let Some(img) = images.lock().get(&memo) {
            return Ok((img.clone(), 0));
        }
        let dir = cache.dir();
        let meta_name = format!("src-{key}-{}", if strip { "strip" } else { "copy" });
        let known = dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(&meta_name)).ok())
            .and_then(|text| {
                let mut f = text.split_whitespace();
                let sha = f.next()?;
                let size = f.next()?.parse().ok()?;
                (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| (sha.to_owned(), size))
            });
        let mut read = 0;
        let bytes = OnceLock::new();
        let (sha256, size) = match known {
            Some(k) => k,
            None => {
                let shipped = Arc::new(make_shipped(src, strip)?);
                read = shipped.len() as u64;
                let (sha, size) = (sha256_reader(&shipped[..])?.0, shipped.len() as u64);
                // Remember the answer only if the source did not change
                // while it was read.
                if identity(&std::fs::metadata(src)?) != key {
                    return Err(std::io::Error::other(format!(
                        "the agent binary {} changed while it was read",
                        src.display()
                    )));
                }
                if let Some(d) = &dir {
                    prune(d);
                    let _ = write_atomic(&d.join(&sha), &shipped);
                    let _ = write_atomic(&d.join(&meta_name), format!("{sha} {size}\n").as_bytes());
                }
                let _ = bytes.set(shipped);
                (sha, size)
            }
        };
        let img = Arc::new(Self {
            src: src.to_owned(),
            key,
            strip,
            dir,
            meta_name,
            sha256,
            size,
            bytes,
            payloads: Mutex::new(HashMap::new()),
        });
        images.lock().insert(memo, img.clone());
        Ok((img, read))
    }

    /// The shipped bytes, checked against [`Self::sha256`]; the second
    /// value is how many bytes were hashed or made for it.
    fn shipped(&self) -> std::io::Result<(Arc<Vec<u8>>, u64)> {
        if let Some(b) = self.bytes.get() {
            return Ok((b.clone(), 0));
        }
        let mut read = 0;
        let cached = self
            .dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join(&self.sha256)).ok());
        if let Some(b) = &cached {
            read += b.len() as u64;
        }
        let good = match &cached {
            Some(b) => sha256_reader(&b[..])?.0 == self.sha256,
            None => false,
        };
        let bytes = match cached {
            Some(b) if good => b,
            _ => {
                let b = make_shipped(&self.src, self.strip)?;
                read += b.len() as u64;
                if sha256_reader(&b[..])?.0 != self.sha256 {
                    // The remembered hash is wrong for this identity:
                    // forget it, so the next start derives it afresh.
                    if let Some(d) = &self.dir {
                        let _ = std::fs::remove_file(d.join(&self.meta_name));
                    }
                    IMAGES
                        .get_or_init(Default::default)
                        .lock()
                        .retain(|_, img| img.sha256 != self.sha256);
                    return Err(std::io::Error::other(format!(
                        "the agent binary {} no longer has the hash remembered for its \
                         identity {} (rewritten in place?); it is derived afresh on the \
                         next start",
                        self.src.display(),
                        self.key
                    )));
                }
                if let Some(d) = &self.dir {
                    let _ = write_atomic(&d.join(&self.sha256), &b);
                }
                b
            }
        };
        Ok((self.bytes.get_or_init(|| Arc::new(bytes)).clone(), read))
    }

    /// The bytes to send in `enc`, or `None` if this controller cannot
    /// produce that encoding; the last value is how many bytes were hashed,
    /// stripped or compressed for it.
    pub(crate) fn payload(&self, enc: Encoding) -> std::io::Result<(Option<Arc<Vec<u8>>>, u64)> {
        let Some((tool, args)) = enc.compressor() else {
            let (b, read) = self.shipped()?;
            return Ok((Some(b), read));
        };
        if let Some(p) = self.payloads.lock().get(&enc) {
            return Ok((p.clone(), 0));
        }
        let file = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{}.{}", self.sha256, enc.name())));
        if let Some(p) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
            let p = Some(Arc::new(p));
            self.payloads.lock().insert(enc, p.clone());
            return Ok((p, 0));
        }
        let (raw, mut read) = self.shipped()?;
        let out = compress(tool, args, &raw);
        if out.is_some() {
            read += raw.len() as u64;
        }
        let out = out.map(Arc::new);
        if let (Some(f), Some(p)) = (&file, &out) {
            let _ = write_atomic(f, p);
        }
        self.payloads.lock().insert(enc, out.clone());
        Ok((out, read))
    }

    /// Forgets a stored payload the target could not use (it might be
    /// damaged): the next miss makes it again.
    pub(crate) fn discard(&self, enc: Encoding) {
        self.payloads.lock().remove(&enc);
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_file(d.join(format!("{}.{}", self.sha256, enc.name())));
        }
    }
}

/// The bytes to ship for `src`: stripped of debug info when asked and
/// `objcopy` can, else the file as it is.
fn make_shipped(src: &Path, strip: bool) -> std::io::Result<Vec<u8>> {
    if strip {
        let out = std::env::temp_dir().join(format!(
            "mitogen-rs-strip-{}-{}",
            std::process::id(),
            unique()
        ));
        let ok = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(src)
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let bytes = if ok { std::fs::read(&out).ok() } else { None };
        let _ = std::fs::remove_file(&out);
        if let Some(b) = bytes.filter(|b| !b.is_empty()) {
            return Ok(b);
        }
    }
    std::fs::read(src)
}

fn compress(tool: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    let read_ok = child.stdout.take()?.read_to_end(&mut out).is_ok();
    let wrote = writer.join().map(|r| r.is_ok()).unwrap_or(false);
    let ok = child.wait().is_ok_and(|s| s.success());
    (read_ok && wrote && ok && !out.is_empty()).then_some(out)
}

fn unique() -> u64 {
    fastrand::u64(..)
}

/// Writes `path` through a temp name and a rename, so readers see the old
/// file or the whole new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.{}.tmp", std::process::id(), unique()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Each new build adds entries: drop those not modified for a week.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > week);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
