//! What a transfer reads from: an open file, the identity it had when it
//! was opened, and (for pushes) the checksum its content must have.
//!
//! The pump compares the identity after the last read: a file rewritten in
//! place or appended to while it was being sent has a new size or mtime
//! (or ctime, which also catches a writer that restores the mtime), and
//! the transfer fails instead of delivering bytes that match neither
//! version. This is rsync's check and has rsync's limit: a change within
//! the same timestamp tick as the previous write, leaving size and times
//! as they were, goes unseen. A path replaced by a new file (rename) does
//! not tear a copy: the open descriptor still reads the old file whole.

use super::error::{Cause, Place, Stage};
use super::{Checksum, FileError};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// The parts of a file's status that change when its content does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Ident {
    pub(crate) fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self::from_meta(&m))
    }

    fn from_meta(m: &std::fs::Metadata) -> Self {
        Self {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// How `now` differs from this, if it does.
    pub(crate) fn change(&self, now: &Self) -> Option<String> {
        let t = |(s, ns): (i64, i64)| format!("{s}.{ns:09}");
        if self.size != now.size {
            Some(format!("size {} → {} bytes", self.size, now.size))
        } else if self.mtime != now.mtime {
            Some(format!("mtime {} → {}", t(self.mtime), t(now.mtime)))
        } else if self.ctime != now.ctime {
            Some(format!("ctime {} → {}", t(self.ctime), t(now.ctime)))
        } else {
            None
        }
    }
}

/// An open file to serve.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Where it was opened from (what errors name).
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) mtime: SystemTime,
    /// Its status when opened: checked again after the last read.
    pub(crate) ident: Ident,
    /// The checksum its content must have, when known (pushes).
    pub(crate) checksum: Option<u64>,
}

impl Source {
    /// Takes an open file's status; `Err` is `(stage, cause)`.
    pub(crate) fn from_file(file: File, path: PathBuf) -> Result<Self, (Stage, Cause)> {
        let m = file.metadata().map_err(|e| (Stage::Open, e.into()))?;
        if !m.is_file() {
            return Err((Stage::Open, Cause::NotAFile));
        }
        Ok(Self {
            path,
            size: m.len(),
            mode: m.mode() & 0o7777,
            mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ident: Ident::from_meta(&m),
            checksum: None,
            file: Arc::new(file),
        })
    }

    /// Whether the file still is what it was when opened, after `sum` was
    /// read from it: the check that runs after the last read.
    pub(crate) fn verify(&self, place: &Place<'_>, sum: u64) -> Result<(), FileError> {
        let now = Ident::of(&self.file).map_err(|e| place.err(Stage::Read, e))?;
        if let Some(change) = self.ident.change(&now) {
            return Err(place.err(Stage::Read, Cause::Changed(change)));
        }
        match self.checksum {
            Some(want) if want != sum => Err(place.err(
                Stage::Read,
                Cause::Changed(format!(
                    "read checksum {sum:016x}, the version being pushed has {want:016x}"
                )),
            )),
            _ => Ok(()),
        }
    }

    /// Opens `place`'s path and reads it whole for its checksum (what a
    /// push is keyed by), then checks it did not change meanwhile.
    pub(crate) fn snapshot(place: &Place<'_>) -> Result<Self, FileError> {
        let file = File::open(place.path).map_err(|e| place.err(Stage::Open, e))?;
        let mut src = Self::from_file(file, place.path.to_owned())
            .map_err(|(stage, cause)| place.err(stage, cause))?;
        let mut sum = Checksum::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let n = match std::os::unix::fs::FileExt::read_at(&*src.file, &mut buf, at) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(place.err(Stage::Read, e)),
            };
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            at += n as u64;
        }
        let sum = sum.finish();
        src.verify(place, sum)?;
        if at != src.size {
            return Err(place.err(
                Stage::Read,
                Cause::Changed(format!("read {at} bytes of {}", src.size)),
            ));
        }
        src.checksum = Some(sum);
        Ok(src)
    }
}
