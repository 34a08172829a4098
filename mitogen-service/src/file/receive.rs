//! The receiving side: atomic writes into the destination.

use super::serve::Fetch;
use super::{
    ACK_EVERY, Checksum, Control, FetchArgs, FetchReply, FileStat, IDLE_TIMEOUT, TransferError,
    WriteOptions,
};
use crate::service::ServiceExt;
use mitogen_core::{Context, Message, Policy, Router};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
