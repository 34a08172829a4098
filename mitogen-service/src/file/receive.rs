//! The receiving side: checks before any bytes move, then atomic writes
//! into the destination.

use super::error::{Cause, Place, Stage};
use super::serve::Fetch;
use super::{
    ACK_EVERY, Checksum, Control, FetchArgs, FetchReply, FileError, FileStat, IDLE_TIMEOUT,
    TransferError, WriteOptions,
};
use crate::service::ServiceExt;
use mitogen_core::{Context, Message, Policy, Router};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An IO error and the step it happened in.
type Staged = (Stage, std::io::Error);

/// An unnamed temp file in the destination's directory that becomes the
/// destination on [`AtomicFile::commit`]; dropped uncommitted, it vanishes.
///
/// Creating it is the cheap check that runs before any bytes move: the
/// destination is not a directory, and its directory exists and is
/// writable.
struct AtomicFile {
    file: File,
    dest: PathBuf,
    /// Set when the system has no O_TMPFILE and a named temp file is used.
    named: Option<PathBuf>,
}

impl AtomicFile {
    fn create(dest: &Path) -> Result<Self, Staged> {
        if std::fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err((
                Stage::Check,
                std::io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error()),
            ));
        }
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
                    .open(&tmp)
                    .map_err(|e| (Stage::Create, e))?;
                Ok(Self {
                    file,
                    dest: dest.to_owned(),
                    named: Some(tmp),
                })
            }
            Err(e) => Err((Stage::Create, e.into())),
        }
    }

    fn commit(
        mut self,
        mode: u32,
        owner: Option<(u32, u32)>,
        mtime: Option<SystemTime>,
    ) -> Result<(), Staged> {
        use std::os::unix::fs::PermissionsExt;
        let attr = |e: std::io::Error| (Stage::Attributes, e);
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &self.file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| attr(e.into()))?;
        }
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(attr)?;
        if let Some(t) = mtime {
            self.file.set_modified(t).map_err(attr)?;
        }
        self.file.sync_all().map_err(|e| (Stage::Sync, e))?;
        let rename = |e: std::io::Error| (Stage::Rename, e);
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
                )
                .map_err(|e| rename(e.into()))?;
                tmp
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(rename(e));
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

/// Where received bytes go: a file (holes become holes) or nowhere.
trait Out: Write {
    /// Skips `len` bytes that read as zeros.
    fn skip(&mut self, len: u64) -> std::io::Result<()>;
    /// Gives the output its final size (a trailing hole writes nothing).
    fn set_size(&mut self, size: u64) -> std::io::Result<()>;
}

impl Out for File {
    fn skip(&mut self, len: u64) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let len = i64::try_from(len).map_err(std::io::Error::other)?;
        self.seek(SeekFrom::Current(len)).map(drop)
    }
    fn set_size(&mut self, size: u64) -> std::io::Result<()> {
        self.set_len(size)
    }
}

impl Out for std::io::Sink {
    fn skip(&mut self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn set_size(&mut self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fetches `path` from `from`'s file service into `dest` on this context,
/// atomically. The destination is checked (not a directory; its directory
/// exists and is writable) before any bytes move.
///
/// # Errors
/// [`TransferError`]: a [`FileError`] naming `dest` and this context for
/// checks and writes, or the source and its context for reading it
/// (including [`Cause::Changed`] when it was modified while being sent);
/// nothing is left at `dest` (or beside it) on error.
pub fn fetch(
    router: &Router,
    from: &Context,
    path: &str,
    dest: &Path,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    let here = Place::new(router, dest);
    if opts.discard {
        let mut sink = std::io::sink();
        return receive(router, from, path, &mut sink, opts, &here).map(|(_, stat)| stat);
    }
    let mut out = AtomicFile::create(dest).map_err(|(stage, e)| here.err(stage, e))?;
    let (meta, stat) = receive(router, from, path, &mut out.file, opts, &here)?;
    out.commit(
        opts.mode.unwrap_or(meta.mode),
        opts.owner,
        opts.mtime.or(Some(meta.mtime)),
    )
    .map_err(|(stage, e)| here.err(stage, e))?;
    Ok(stat)
}

/// Fetches `key` into an open file (a push cache, named `label` in
/// errors); returns the source's metadata too.
pub(crate) fn fetch_to_file(
    router: &Router,
    from: &Context,
    key: &str,
    file: &mut File,
    label: &Path,
) -> Result<(FetchReply, FileStat), TransferError> {
    let here = Place::new(router, label);
    receive(router, from, key, file, &WriteOptions::default(), &here)
}

fn receive(
    router: &Router,
    from: &Context,
    path: &str,
    out: &mut dyn Out,
    opts: &WriteOptions,
    here: &Place<'_>,
) -> Result<(FetchReply, FileStat), TransferError> {
    let rx = router.receiver_with(Policy::Respondent(from.id()));
    let meta = from.call_service::<Fetch>(&FetchArgs {
        path: path.to_owned(),
        sink: rx.sender(),
    })??;
    let mut sum = Checksum::default();
    // `got` is the offset reached (data and holes); acknowledgements count
    // data bytes only (`data`), since holes take no room in the window.
    let mut got = 0u64;
    let mut data = 0u64;
    let mut acked = 0u64;
    let mut trailing_hole = false;
    let interrupted = |why: String| here.err(Stage::Receive, Cause::Interrupted(why));
    loop {
        if let Some(flag) = &opts.pause_until_exists {
            while !Path::new(flag).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let msg: Message = rx.recv_timeout(IDLE_TIMEOUT).map_err(|e| {
            interrupted(format!("from {} (context {}): {e}", from.name(), from.id()))
        })?;
        if msg.enc == mitogen_core::message::Enc::BIN {
            if got + msg.data.len() as u64 > meta.size {
                return Err(interrupted(format!(
                    "more than the announced {} bytes arrived",
                    meta.size
                ))
                .into());
            }
            out.write_all(&msg.data)
                .map_err(|e| here.err(Stage::Write, e))?;
            sum.update(&msg.data);
            got += msg.data.len() as u64;
            data += msg.data.len() as u64;
            trailing_hole = false;
            // Acknowledge every ACK_EVERY bytes (and at the end): fewer
            // messages for the programs relaying them (ssh, sshd) to wake for.
            if data - acked >= ACK_EVERY || got == meta.size {
                if meta.ack.send(router, &(meta.id, data)).is_err() {
                    return Err(interrupted("cannot acknowledge".into()).into());
                }
                acked = data;
            }
            if opts.slow_ms_per_chunk > 0 {
                std::thread::sleep(Duration::from_millis(opts.slow_ms_per_chunk));
            }
            continue;
        }
        match msg
            .decode::<Control>()
            .map_err(|e| interrupted(format!("undecodable control message: {e}")))?
        {
            Control::Error(e) => return Err(e.into()),
            Control::Hole { len } => {
                if got.saturating_add(len) > meta.size {
                    return Err(interrupted(format!(
                        "a hole past the announced {} bytes arrived",
                        meta.size
                    ))
                    .into());
                }
                out.skip(len).map_err(|e| here.err(Stage::Write, e))?;
                sum.zeros(len);
                got += len;
                trailing_hole = true;
                // The last data may be acknowledged yet unsent: a file that
                // ends in a hole after less than ACK_EVERY of data.
                if got == meta.size && data > acked {
                    if meta.ack.send(router, &(meta.id, data)).is_err() {
                        return Err(interrupted("cannot acknowledge".into()).into());
                    }
                    acked = data;
                }
            }
            Control::End { size, checksum } => {
                if size != got || checksum != sum.finish() {
                    return Err(here
                        .err(
                            Stage::Verify,
                            Cause::Corrupt {
                                got,
                                want: size,
                                got_sum: sum.finish(),
                                want_sum: checksum,
                            },
                        )
                        .into());
                }
                if trailing_hole {
                    out.set_size(size).map_err(|e| here.err(Stage::Write, e))?;
                }
                return Ok((meta, FileStat { size, checksum }));
            }
        }
    }
}

/// Writes `data` to `dest` atomically, naming the stage on error.
fn write_staged(dest: &Path, data: &[u8], opts: &WriteOptions) -> Result<FileStat, Staged> {
    let mut out = AtomicFile::create(dest)?;
    out.file.write_all(data).map_err(|e| (Stage::Write, e))?;
    let mut sum = Checksum::default();
    sum.update(data);
    out.commit(opts.mode.unwrap_or(0o644), opts.owner, opts.mtime)?;
    Ok(FileStat {
        size: data.len() as u64,
        checksum: sum.finish(),
    })
}

/// [`write_atomic`] in a serving context: errors name `dest` and the
/// context.
pub(super) fn write_here(
    router: &Router,
    dest: &Path,
    data: &[u8],
    opts: &WriteOptions,
) -> Result<FileStat, FileError> {
    write_staged(dest, data, opts).map_err(|(stage, e)| Place::new(router, dest).err(stage, e))
}

/// Writes `data` to `path` atomically (temp file, fsync, rename).
///
/// # Errors
/// The OS error, with nothing left behind.
pub fn write_atomic(path: &Path, data: &[u8], opts: &WriteOptions) -> std::io::Result<FileStat> {
    write_staged(path, data, opts).map_err(|(_, e)| e)
}
