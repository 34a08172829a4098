//! What a controller works out once about its ansible-core install, kept
//! between processes in `$XDG_CACHE_HOME/mitogen-rs/ansible`
//! ([`mitogen_core::layer::controller_cache_dir`]).
//!
//! Two things cost a Python start each (80–250 ms, more on a busy
//! machine), and every `mitogen-play` run used to pay them before its
//! first task: where `ansible` lives and its version, and each module's
//! payload (the module_utils closure `py/finder.py` computes). Both are
//! functions of files on disk, so an entry records the identity (device,
//! inode, size, mtime in ns) of every file its answer was read from and is
//! used only while all of them are unchanged; anything else, an unreadable
//! or foreign entry included, recomputes and rewrites it. Entries are
//! written to a temporary name and renamed, so a reader never sees half
//! of one.
//!
//! What an entry cannot notice: a file that did not exist when it was made
//! and would now change the answer (an `ansible` package newly installed
//! earlier on `sys.path`, a module_utils file added where the finder found
//! none). Removing the directory starts afresh.

use super::PayloadFile;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped when an entry's shape or meaning changes.
const FORMAT: u32 = 1;

/// A file's identity: device, inode, size, mtime (s, ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp(u64, u64, u64, i64, i64);

impl Stamp {
    pub(super) fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }
}

/// Files an answer was read from, with their identities then.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Inputs(Vec<(PathBuf, Stamp)>);

impl Inputs {
    /// Records `path`; false if it cannot be stat'ed (nothing to check later).
    pub(super) fn add(&mut self, path: &Path) -> bool {
        match Stamp::of(path) {
            Some(s) => {
                self.0.push((path.to_owned(), s));
                true
            }
            None => false,
        }
    }

    fn unchanged(&self) -> bool {
        self.0.iter().all(|(p, s)| Stamp::of(p).as_ref() == Some(s))
    }
}

/// Where ansible-core lives for one python.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Core {
    pub(super) ansible_dir: PathBuf,
    pub(super) version: String,
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    format: u32,
    key: String,
    inputs: Inputs,
    value: T,
}

/// SHA-256 of `data`, lowercase hex.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file for `kind` and `key` (named by a hash of the key: keys hold
/// paths).
fn path_for(kind: &str, key: &str) -> Option<PathBuf> {
    let dir = mitogen_core::layer::controller_cache_dir("ansible")?;
    let name = sha256_hex(key.as_bytes());
    Some(dir.join(format!("{kind}-{}.json", &name[..24])))
}

/// The cached value for `key`, if every input it was read from is unchanged.
pub(super) fn load<T: for<'de> Deserialize<'de>>(kind: &str, key: &str) -> Option<T> {
    let data = std::fs::read(path_for(kind, key)?).ok()?;
    let e: Entry<T> = serde_json::from_slice(&data).ok()?;
    (e.format == FORMAT && e.key == key && e.inputs.unchanged()).then_some(e.value)
}

/// Stores `value` for `key`; failures only cost the next process a recompute.
pub(super) fn store<T: Serialize>(kind: &str, key: &str, inputs: Inputs, value: &T) {
    let Some(path) = path_for(kind, key) else {
        return;
    };
    let e = Entry {
        format: FORMAT,
        key: key.to_owned(),
        inputs,
        value,
    };
    let Ok(data) = serde_json::to_vec(&e) else {
        return;
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let ok = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&data))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = ok {
        log::debug!("ansible cache: cannot write {}: {e}", path.display());
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The key of `python`'s ansible-core: what decides which `ansible` it
/// imports (the path as given, where it resolves, the environment
/// variables that change `sys.path`, the directory it starts in).
pub(super) fn core_key(python: &Path) -> String {
    let mut key = format!(
        "{}\0{}",
        python.display(),
        std::fs::canonicalize(python).unwrap_or_default().display()
    );
    for var in [
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "PYTHONNOUSERSITE",
    ] {
        key.push('\0');
        if let Some(v) = std::env::var_os(var) {
            key.push_str(&v.to_string_lossy());
        }
    }
    key.push('\0');
    key.push_str(
        &std::env::current_dir()
            .unwrap_or_default()
            .to_string_lossy(),
    );
    key
}

/// What `core`'s answer depends on: the interpreter and ansible's own files.
pub(super) fn core_inputs(python: &Path, core: &Core) -> Option<Inputs> {
    let mut inputs = Inputs::default();
    let real = std::fs::canonicalize(python).ok()?;
    (inputs.add(python)
        && inputs.add(&real)
        && inputs.add(&core.ansible_dir.join("__init__.py"))
        && inputs.add(&core.ansible_dir.join("release.py")))
    .then_some(inputs)
}

/// What a payload depends on: every file it names (the module among them).
pub(super) fn payload_inputs(files: &[PayloadFile]) -> Option<Inputs> {
    let mut inputs = Inputs::default();
    files
        .iter()
        .filter_map(|f| f.path.as_deref())
        .all(|p| inputs.add(p))
        .then_some(inputs)
}
