//! OpenSSH connection sharing (`ControlMaster`, `ControlPath`,
//! `ControlPersist`): the options, where their sockets live, and keeping
//! that place private.
//!
//! A master is one authenticated ssh connection that later `ssh` runs to
//! the same user, host and port reuse through a Unix socket, skipping the
//! TCP, key exchange and authentication round trips (Ansible's ssh
//! connection does the same, with `ControlPersist=60s`). Anyone who can
//! connect to that socket can run commands as the logged-in user, so it is
//! kept in a directory only its owner can enter.

use crate::error::AuthError;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether a connection uses or becomes an OpenSSH master
/// (`ControlMaster`); see [`Ssh::control_master`](crate::Ssh::control_master).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlMaster {
    /// Never share (`ControlMaster=no`), even if ssh_config says so.
    No,
    /// Use a running master for the same user, host and port; without one,
    /// become the master (`ControlMaster=auto`). The usual choice.
    Auto,
    /// Always start a new master (`ControlMaster=yes`).
    Yes,
}

impl ControlMaster {
    pub(crate) fn as_option(self) -> &'static str {
        match self {
            Self::No => "ControlMaster=no",
            Self::Auto => "ControlMaster=auto",
            Self::Yes => "ControlMaster=yes",
        }
    }
}

/// A request to a running master (`ssh -O ...`); see
/// [`Ssh::control_argv`](crate::Ssh::control_argv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlCommand {
    /// Is a master running? Exits 0 if so, printing `Master running
    /// (pid=N)` on stderr.
    Check,
    /// End the master now, and the sessions running through it.
    Exit,
    /// Accept no new sessions; end once the running ones have.
    Stop,
}

impl ControlCommand {
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Exit => "exit",
            Self::Stop => "stop",
        }
    }
}

/// Longest socket path the kernel takes (`sun_path` is 108 bytes with its
/// NUL) .
const SUN_PATH_MAX: usize = 107;
/// What ssh adds to the directory: `/`, `%C` (40 hex digits of SHA-1) and,
/// while a master binds, a `.` and 16 random characters.
const SOCKET_NAME_LEN: usize = 1 + 40 + 17;

/// The socket file name used in the default directory: `%C`, a hash of
/// local host, remote host, port and user, so it is short and distinct.
pub(crate) const SOCKET_NAME: &str = "%C";

/// Where control sockets go unless a path is given: the first of
/// `$XDG_RUNTIME_DIR/mitogen-rs/cm` (a per-user tmpfs, gone at logout),
/// `$HOME/.cache/mitogen-rs/cm` and `/tmp/mitogen-rs-cm-<uid>` whose socket
/// paths fit in `sun_path`. Read from the environment of the process that
/// runs ssh (an intermediary, for a hop through it).
pub(crate) fn default_dir(xdg_runtime_dir: Option<&str>, home: Option<&str>, uid: u32) -> PathBuf {
    let candidates = [
        xdg_runtime_dir.map(|d| Path::new(d).join("mitogen-rs/cm")),
        home.map(|h| Path::new(h).join(".cache/mitogen-rs/cm")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.is_absolute() && d.as_os_str().len() + SOCKET_NAME_LEN <= SUN_PATH_MAX)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/mitogen-rs-cm-{uid}")))
}

/// [`default_dir`] for this process.
pub(crate) fn default_dir_here() -> PathBuf {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    default_dir(
        var("XDG_RUNTIME_DIR").as_deref(),
        var("HOME").as_deref(),
        rustix::process::geteuid().as_raw(),
    )
}

/// Makes `dir` (and missing parents) with mode 0700, or checks an existing
/// one: a real directory (not a symlink), owned by `uid`, that nobody else
/// may enter (a group- or world-accessible one of ours is narrowed to 0700).
///
/// # Errors
/// [`AuthError::ControlDir`] saying what is wrong with it.
pub(crate) fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), AuthError> {
    let err = |problem: String| AuthError::ControlDir {
        dir: dir.display().to_string(),
        problem,
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(err(format!("cannot create it: {e}")));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(err("it is not a directory (a symlink?)".into()));
    }
    if meta.uid() != uid {
        return Err(err(format!(
            "it is owned by uid {}, not {uid}: someone else could use the sockets",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot make it private (mode 0700): {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_prefers_runtime_dir_then_cache_then_tmp() {
        assert_eq!(
            default_dir(Some("/run/user/1000"), Some("/home/u"), 1000),
            Path::new("/run/user/1000/mitogen-rs/cm")
        );
        assert_eq!(
            default_dir(None, Some("/home/u"), 1000),
            Path::new("/home/u/.cache/mitogen-rs/cm")
        );
        // Relative or too long for sun_path: skipped.
        let long = format!("/home/{}", "x".repeat(40));
        assert_eq!(
            default_dir(Some("relative"), Some(&long), 7),
            Path::new("/tmp/mitogen-rs-cm-7")
        );
        assert_eq!(
            default_dir(None, None, 0),
            Path::new("/tmp/mitogen-rs-cm-0")
        );
        // Every choice leaves room for ssh's socket name.
        for d in [
            default_dir(Some("/run/user/4294967295"), None, 0),
            default_dir(None, Some("/home/a-long-user-name"), 0),
        ] {
            assert!(
                d.as_os_str().len() + SOCKET_NAME_LEN <= SUN_PATH_MAX,
                "{d:?}"
            );
        }
    }

    #[test]
    fn private_dir_is_made_checked_and_narrowed() {
        let base = std::env::temp_dir().join(format!("mitogen-cm-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let uid = rustix::process::geteuid().as_raw();
        let dir = base.join("a/cm");
        ensure_private_dir(&dir, uid).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // Again: fine. Widened: narrowed.
        ensure_private_dir(&dir, uid).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir, uid).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Someone else's: refused.
        let e = ensure_private_dir(&dir, uid + 1).unwrap_err();
        assert!(e.to_string().contains("owned by uid"), "{e}");
        // A symlink to a private directory: refused.
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = ensure_private_dir(&link, uid).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        // A file in the way.
        let file = base.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(ensure_private_dir(&file, uid).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
