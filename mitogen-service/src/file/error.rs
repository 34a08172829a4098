//! Why a transfer failed.

use mitogen_core::{CallError, CallErrorKind, Context};
use std::path::PathBuf;

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

/// An error that displays as its kind (service errors keep their kind's text).
#[derive(Debug)]
pub(super) struct KindError(pub(super) CallErrorKind);
impl std::fmt::Display for KindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for KindError {}

pub(super) fn kind_err(ctx: &Context, what: &str, kind: CallErrorKind) -> TransferError {
    TransferError::Call(CallError {
        context: ctx.id(),
        context_name: ctx.name().to_owned(),
        function: what.to_owned(),
        kind,
    })
}
