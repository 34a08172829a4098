//! Errors a user can act on. Module *failures* are not errors: they are
//! results with [`crate::Status::Failed`], exactly as ansible-core reports
//! them. These are the cases where no module result exists.

use std::path::PathBuf;

/// What went wrong before or around running a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The given python cannot run or does not import ansible-core.
    #[error("cannot use ansible-core through {python}: {detail}")]
    AnsibleCore {
        /// The python asked.
        python: PathBuf,
        /// What it printed, or the OS error.
        detail: String,
    },
    /// No module of that name in any search path.
    #[error("The module {name} was not found in configured module paths. Tried: {}", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    UnknownModule {
        /// The name asked for.
        name: String,
        /// Every file looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// A module file exists but cannot be read.
    #[error("cannot read module {}: {source}", path.display())]
    ReadModule {
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A module imports module_utils that cannot be found.
    #[error("module_utils for {module}: {message}")]
    ModuleUtils {
        /// The module.
        module: String,
        /// ansible-core's wording ("Could not find imported module support code ...").
        message: String,
    },
    /// The call to the target failed for a reason other than the target
    /// going away (that is [`crate::Status::Unreachable`]).
    #[error(transparent)]
    Call(Box<mitogen_core::CallError>),
    /// The task names an ansible-core action plugin this runner does not
    /// reimplement yet (running its module bare would give another result).
    #[error("action plugin {0} is not supported by mitogen-ansible yet")]
    UnsupportedAction(String),
    /// A file transfer to or from the target failed.
    #[error("transferring {path}: {source}")]
    Transfer {
        /// The remote path.
        path: String,
        /// What `mitogen-service` said.
        #[source]
        source: Box<mitogen_service::TransferError>,
    },
    /// A controller-side file (a rendered template, fetched data) could
    /// not be read or written.
    #[error("{}: {source}", path.display())]
    LocalFile {
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The task's arguments are not a JSON object.
    #[error("module arguments must be a JSON object, not {0}")]
    BadArgs(String),
}

impl From<mitogen_core::CallError> for Error {
    fn from(e: mitogen_core::CallError) -> Self {
        Self::Call(Box::new(e))
    }
}
