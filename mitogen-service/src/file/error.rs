//! Why a transfer failed: typed values that survive hops.
//!
//! A [`FileError`] names the file a failed step was about (the destination
//! for checks and writes, the source for opening and reading it), the
//! context that holds that file, the step ([`Stage`]) and the [`Cause`],
//! each once. It is serialisable, so a target's error reaches the
//! controller as the same value rather than as text, and is displayed
//! exactly once however many contexts it crossed.

use mitogen_core::{CallError, CallErrorKind, Context, ContextId, Router};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(from = "WireTransferError", into = "WireTransferError")]
#[non_exhaustive]
pub enum TransferError {
    /// A call the transfer needed failed: refused by policy, not
    /// registered, disconnected, timed out.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
}

impl TransferError {
    /// The file error, if that is what this is.
    pub fn file(&self) -> Option<&FileError> {
        match self {
            Self::File(f) => Some(f),
            Self::Call(_) => None,
        }
    }
}

/// A step of a transfer that failed on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Stage {
    /// Opening (or looking up) the source.
    Open,
    /// Reading the source (and checking it did not change meanwhile).
    Read,
    /// Checking the destination before any bytes move.
    Check,
    /// Creating the temp file beside the destination.
    Create,
    /// Writing received bytes.
    Write,
    /// Receiving: the data stream stopped or carried something unexpected.
    Receive,
    /// Comparing what arrived with what the sender announced.
    Verify,
    /// Setting owner, mode and mtime.
    Attributes,
    /// Flushing the data to disk.
    Sync,
    /// Moving the finished file into place.
    Rename,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Open => "opening",
            Self::Read => "reading",
            Self::Check => "checking destination",
            Self::Create => "creating a temp file for",
            Self::Write => "writing",
            Self::Receive => "receiving",
            Self::Verify => "verifying",
            Self::Attributes => "setting owner, mode and mtime of",
            Self::Sync => "syncing",
            Self::Rename => "renaming into place",
        })
    }
}

/// What went wrong at a [`Stage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Cause {
    /// An OS error; [`FileError::os_error`] rebuilds the `io::Error`.
    Os(i32),
    /// An IO error without an OS error number (its text).
    Io(String),
    /// The source is not a regular file.
    NotAFile,
    /// What arrived does not match what the sender announced.
    Corrupt {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        want: u64,
        /// Checksum of what arrived.
        got_sum: u64,
        /// Checksum the sender computed.
        want_sum: u64,
    },
    /// The source was modified while it was being read, so what was read
    /// matches no version of it; nothing was written.
    Changed(String),
    /// The data stream stopped or broke (the other end went away, went
    /// silent, or sent something that is not part of the protocol).
    Interrupted(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Os(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(*errno)),
            Self::Io(text) => f.write_str(text),
            Self::NotAFile => f.write_str("not a regular file"),
            Self::Corrupt {
                got,
                want,
                got_sum,
                want_sum,
            } => write!(
                f,
                "received {got} bytes (checksum {got_sum:016x}), expected {want} (checksum {want_sum:016x})"
            ),
            Self::Changed(what) => write!(f, "changed while being sent ({what})"),
            Self::Interrupted(why) => write!(f, "interrupted: {why}"),
        }
    }
}

impl From<std::io::Error> for Cause {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => Self::Os(errno),
            None => Self::Io(e.to_string()),
        }
    }
}

/// A file operation of a transfer failed: which file, where, at which
/// step, and why, each named once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{stage} {} on {context_name} (context {context}): {cause}", path.display())]
#[non_exhaustive]
pub struct FileError {
    /// The context that holds the file.
    pub context: ContextId,
    /// That context's name.
    pub context_name: String,
    /// The file: the destination for checks and writes, the source for
    /// opening and reading it.
    pub path: PathBuf,
    /// The step that failed.
    pub stage: Stage,
    /// Why.
    pub cause: Cause,
}

impl FileError {
    /// The OS error, for a [`Cause::Os`].
    pub fn os_error(&self) -> Option<std::io::Error> {
        match self.cause {
            Cause::Os(errno) => Some(std::io::Error::from_raw_os_error(errno)),
            _ => None,
        }
    }
}

/// A file in this context, for building [`FileError`]s about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) router: &'a Router,
    pub(crate) path: &'a Path,
}

impl<'a> Place<'a> {
    pub(crate) fn new(router: &'a Router, path: &'a Path) -> Self {
        Self { router, path }
    }

    pub(crate) fn err(&self, stage: Stage, cause: impl Into<Cause>) -> FileError {
        FileError {
            context: self.router.id(),
            context_name: self.router.name().to_owned(),
            path: self.path.to_owned(),
            stage,
            cause: cause.into(),
        }
    }
}

/// A refusal or other call-level failure raised inside a service method,
/// kept as its kind (the service framework passes it on unchanged).
#[derive(Debug)]
pub(crate) struct KindError(pub(crate) CallErrorKind);
impl std::fmt::Display for KindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for KindError {}

pub(crate) fn kind_err(ctx: &Context, what: &str, kind: CallErrorKind) -> TransferError {
    TransferError::Call(CallError {
        context: ctx.id(),
        context_name: ctx.name().to_owned(),
        function: what.to_owned(),
        kind,
    })
}

/// [`TransferError`] on the wire (`CallError` itself is not serialisable).
#[derive(Serialize, Deserialize)]
enum WireTransferError {
    Call {
        context: ContextId,
        context_name: String,
        function: String,
        kind: CallErrorKind,
    },
    File(FileError),
}

impl From<TransferError> for WireTransferError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Call(c) => Self::Call {
                context: c.context,
                context_name: c.context_name,
                function: c.function,
                kind: c.kind,
            },
            TransferError::File(f) => Self::File(f),
        }
    }
}

impl From<WireTransferError> for TransferError {
    fn from(e: WireTransferError) -> Self {
        match e {
            WireTransferError::Call {
                context,
                context_name,
                function,
                kind,
            } => Self::Call(CallError {
                context,
                context_name,
                function,
                kind,
            }),
            WireTransferError::File(f) => Self::File(f),
        }
    }
}
