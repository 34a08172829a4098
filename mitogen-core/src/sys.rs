//! The one place with `unsafe` and raw OS calls.
//!
//! Everything else in the crate uses these safe wrappers (and `rustix`, which
//! is itself safe), so the unsafe surface can be read in one sitting.

use bytes::BytesMut;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

/// Reads into the spare capacity of `buf` without zeroing it first, and
/// extends `buf` by what was read. Reserves `min_spare` bytes first.
pub(crate) fn read_into_spare(
    fd: &File,
    buf: &mut BytesMut,
    min_spare: usize,
) -> io::Result<usize> {
    buf.reserve(min_spare);
    let spare = buf.spare_capacity_mut();
    let (filled, _) = rustix::io::read(fd, spare).map_err(io::Error::from)?;
    let n = filled.len();
    // SAFETY: `rustix::io::read` initialised the first `n` bytes of the spare
    // capacity (it returns them as `filled`), and `n <= spare.len()`, so the
    // new length covers only initialised bytes within the allocation.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Puts `fd` in non-blocking mode.
pub(crate) fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, on).map_err(io::Error::from)
}

/// Duplicates `fd` to a new close-on-exec descriptor numbered 3 or above.
pub(crate) fn dup_cloexec(fd: impl AsFd) -> io::Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(io::Error::from)
}

/// Points fd 0 at /dev/null and fd 1 at stderr, so stray reads and prints in
/// an agent cannot touch the channel to the parent.
pub(crate) fn detach_stdio() -> io::Result<()> {
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null).map_err(io::Error::from)?;
    rustix::stdio::dup2_stdout(rustix::stdio::stderr()).map_err(io::Error::from)
}

/// Sends `SIGKILL` to `pid`, ignoring "no such process".
pub(crate) fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// A user account as the system's user database (NSS: files, LDAP,
/// sssd, ...) has it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: std::path::PathBuf,
}

impl UserEntry {
    fn from_uzers(u: &uzers::User) -> Self {
        use uzers::os::unix::UserExt;
        Self {
            name: u.name().to_string_lossy().into_owned(),
            uid: u.uid(),
            gid: u.primary_group_id(),
            home: u.home_dir().to_owned(),
        }
    }
}

/// The account named `name`, if the user database has one.
pub fn user_by_name(name: &str) -> Option<UserEntry> {
    uzers::get_user_by_name(name).map(|u| UserEntry::from_uzers(&u))
}

/// The account with user id `uid`, if the user database has one.
pub fn user_by_uid(uid: u32) -> Option<UserEntry> {
    uzers::get_user_by_uid(uid).map(|u| UserEntry::from_uzers(&u))
}

/// The effective user name (from the user database, else `$USER`, else the uid).
pub fn user_name() -> String {
    let uid = rustix::process::geteuid().as_raw();
    user_by_uid(uid)
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// The host name (`uname -n`).
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(false)` on timeout.
pub(crate) fn wait_readable(fd: impl AsFd, timeout: std::time::Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens a pseudo-terminal with the kernel's default (cooked, echoing)
/// modes, so a program turning echo off to read a password can be seen
/// ([`echo_on`]); returns (master, slave).
pub(crate) fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.as_bytes()));
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?
        .into();
    Ok((master, slave))
}

/// Whether the terminal behind `master` echoes input (programs turn echo
/// off while reading a password, and discard input typed before that).
pub(crate) fn echo_on(master: impl AsFd) -> bool {
    rustix::termios::tcgetattr(master)
        .is_ok_and(|t| t.local_modes.contains(rustix::termios::LocalModes::ECHO))
}

/// Makes `cmd` start in a new session (so it cannot reach our terminal),
/// with `ctty`, if given, as its controlling terminal.
pub(crate) fn new_session(cmd: &mut std::process::Command, ctty: Option<&OwnedFd>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = ctty.map(|f| f.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two async-signal-safe system calls (setsid, ioctl), allocating
    // nothing. `fd` is a copy of a descriptor number that is open in the
    // parent when `spawn` runs (the caller keeps `ctty` alive across it), so
    // it is open in the child too (close-on-exec only acts at exec).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            if let Some(fd) = fd {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::process::ioctl_tiocsctty(fd)?;
            }
            Ok(())
        });
    }
}

/// Raises the soft open-files limit to the hard limit (many targets means
/// many fds); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim)?;
    }
    Ok(lim.current.unwrap_or(u64::MAX))
}

/// Grows a pipe's buffer (fewer wake-ups for bulk data through ssh or
/// sudo); a no-op for sockets and on failure.
pub(crate) fn grow_pipe(fd: impl AsFd, size: usize) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, size);
}

/// Reads up to `len` bytes at `offset` into a fresh buffer without zeroing
/// it first; returns them as a payload that can be sent without a copy.
pub(crate) fn pread_payload(file: &File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        let (filled, _) = rustix::io::pread(file, spare, at).map_err(io::Error::from)?;
        let n = filled.len();
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: `pread` initialised the first `n` bytes of the spare
        // capacity (returned as `filled`), within the allocation.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(buf.freeze())
}
