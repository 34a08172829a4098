//! Error types, split by operation so callers can branch on what matters.

use crate::ids::ContextId;
use crate::remote_error::RemoteError;
use std::io;
use std::time::Duration;

/// The crate-wide error: anything [`crate::init`] or a connection can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting the router or broker failed (the OS refused a poll, waker or thread).
    #[error("cannot start router: {0}")]
    Start(#[source] io::Error),
    /// A connection to a new context failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A call failed (remotely, or because its context disconnected).
    #[error(transparent)]
    Call(#[from] CallError),
    /// Receiving failed.
    #[error(transparent)]
    Recv(#[from] RecvError),
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Payload(#[from] crate::message::PayloadError),
    /// This process was started as an agent but its bootstrap failed.
    #[error("agent bootstrap failed: {0}")]
    Agent(String),
}

/// Why receiving a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The deadline passed with nothing received.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The sender closed the channel, or the receiver's router shut down.
    #[error("channel closed")]
    Closed,
    /// A dead message arrived: no (more) messages will come, for `reason`.
    #[error("no reply will come: {reason} (reported by context {from})")]
    Dead {
        /// The reason carried by the dead message.
        reason: String,
        /// The context that produced it.
        from: ContextId,
    },
}

/// What went wrong with a call; carried by [`CallError`].
///
/// Layers that need more kinds (services, the Ansible runner) register their
/// own [`crate::ErrorType`]s and return them as [`CallErrorKind::Failed`]:
/// the typed value is reachable with [`CallError::downcast_ref`] on the
/// caller's side, after any number of hops.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The remote registry has no function with that name.
    UnknownFunction,
    /// The arguments could not be decoded as the function's `Args`.
    BadArguments(String),
    /// The function returned `Err`: its text, source chain and (for
    /// registered error types) the typed value.
    Failed(RemoteError),
    /// The function panicked with this message; the agent survived.
    Panicked(String),
    /// An earlier call in the same chain failed, so this one did not run.
    ChainAborted {
        /// The function whose failure aborted the chain.
        function: String,
        /// What that failure was.
        cause: Box<Self>,
    },
    /// The result could not be decoded as the function's `Output`.
    BadResult(String),
    /// The context (or one on the way to it) disconnected before replying,
    /// or was already gone when the call was made.
    Disconnected(String),
    /// The caller's deadline passed; the call may still be running remotely
    /// (it is told the caller gave up: [`crate::CallCx::is_cancelled`]).
    Timeout(Duration),
    /// The call could not be routed or was refused by a policy (a dead reply).
    Refused(String),
    /// The request or its reply was larger than `max_message_size`.
    TooLarge(String),
}

impl std::fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownFunction => f.write_str("no such function is registered there"),
            Self::BadArguments(e) => write!(f, "bad arguments: {e}"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::Panicked(e) => write!(f, "panicked: {e}"),
            Self::ChainAborted { function, cause } => {
                write!(f, "not run: earlier call {function} in the chain {cause}")
            }
            Self::BadResult(e) => write!(f, "bad result: {e}"),
            Self::Disconnected(e) => write!(f, "context disconnected: {e}"),
            Self::Timeout(d) => write!(f, "no reply within {d:?}"),
            Self::Refused(e) => write!(f, "refused: {e}"),
            Self::TooLarge(e) => write!(f, "too large: {e}"),
        }
    }
}

impl std::error::Error for CallErrorKind {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            Self::ChainAborted { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

impl CallErrorKind {
    /// A [`CallErrorKind::Failed`] with only a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(RemoteError::msg(message))
    }

    /// Whether the context (or the way to it) is gone: the call's target is
    /// unreachable rather than the call having failed there.
    pub fn is_disconnected(&self) -> bool {
        match self {
            Self::Disconnected(_) => true,
            Self::ChainAborted { cause, .. } => cause.is_disconnected(),
            _ => false,
        }
    }
}

/// A call to a function in a remote context failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call to {function} in context {context} ({context_name}): {kind}")]
pub struct CallError {
    /// The context the call went to.
    pub context: ContextId,
    /// That context's name (e.g. `local.3`).
    pub context_name: String,
    /// The function's registered name.
    pub function: String,
    /// What went wrong.
    #[source]
    pub kind: CallErrorKind,
}

impl CallError {
    /// The first error of type `T` in this error's source chain: a typed
    /// error the remote function failed with (registered with
    /// [`crate::Registry::add_error`]), however many hops it crossed.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        crate::find_source::<T>(self)
    }
}

/// A connection to a new context failed; names the stage that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The agent process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program that was to be run.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The agent did not greet in time.
    #[error("no greeting from {name} within {timeout:?}{}", printed_suffix(.printed))]
    Timeout {
        /// The new context's name.
        name: String,
        /// The connect timeout.
        timeout: Duration,
        /// The last lines the target printed, if any.
        printed: String,
    },
    /// The agent exited (or closed its stream) before greeting.
    #[error("{name} exited before greeting ({status}){}", printed_suffix(.printed))]
    EarlyExit {
        /// The new context's name.
        name: String,
        /// Its exit status, as text.
        status: String,
        /// The last lines the target printed, if any.
        printed: String,
    },
    /// The agent printed something that is not a greeting.
    #[error("{name} printed unexpected output instead of a greeting{}", printed_suffix(.printed))]
    Garbage {
        /// The new context's name.
        name: String,
        /// What it printed (last lines).
        printed: String,
    },
    /// The agent runs another protocol version or function registry.
    #[error(
        "{name} runs protocol {remote} but this controller speaks {local}: use the same binary on both ends"
    )]
    VersionMismatch {
        /// The new context's name.
        name: String,
        /// What the agent announced.
        remote: String,
        /// What this side expected.
        local: String,
    },
    /// Reading or writing the bootstrap stream failed.
    #[error("bootstrap I/O with {name} failed: {source}")]
    Io {
        /// The new context's name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No connection method with this name is registered (in the `via` context).
    #[error("no connection method named {0:?} is registered")]
    UnknownMethod(String),
    /// The method's options could not be decoded.
    #[error("bad connection options: {0}")]
    BadOptions(String),
    /// Connecting through an intermediary failed.
    #[error("connecting via context {via} failed: {source}")]
    Via {
        /// The intermediary.
        via: ContextId,
        /// What the intermediary reported.
        #[source]
        source: CallError,
    },
    /// The connection method's program refused (bad password, host key
    /// mismatch, ...): `source` is the method's own error type.
    #[error("{name}: {source}")]
    Method {
        /// The new context's name.
        name: String,
        /// The method's classified error (e.g. `mitogen_ssh::AuthError`).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The target's platform has no agent binary registered.
    #[error("{name} is {os} {arch}, and no agent binary is registered for it (have: {have})")]
    NoAgent {
        /// The new context's name.
        name: String,
        /// `uname -s` on the target.
        os: String,
        /// `uname -m` on the target.
        arch: String,
        /// The platforms that have a binary.
        have: String,
    },
    /// The target's first stage reported an error (no usable cache
    /// directory, upload failed verification, ...).
    #[error("bootstrap of {name} failed: {reason}")]
    Bootstrap {
        /// The new context's name.
        name: String,
        /// What the first stage said.
        reason: String,
    },
    /// Context ids could not be allocated (the controller is unreachable).
    #[error("cannot allocate a context id: {0}")]
    AllocateId(String),
    /// The router is shutting down.
    #[error("router is shut down")]
    Shutdown,
}

impl ConnectError {
    /// The first error of type `T` in this error's source chain, e.g.
    /// `mitogen_ssh::AuthError` from the method itself or from an
    /// intermediary any number of hops away ([`ConnectError::Via`]).
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        crate::find_source::<T>(self)
    }
}

fn printed_suffix(printed: &str) -> String {
    if printed.trim().is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; it printed:\n{}", printed.trim_end())
    }
}
