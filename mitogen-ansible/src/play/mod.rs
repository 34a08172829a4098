//! Plays: inventory, playbooks, templating, the executor.
pub mod config;
pub mod events;
pub mod executor;
pub mod inventory;
pub mod playbook;
pub mod template;
pub mod util;
pub mod yaml;

pub use config::Config;
pub use events::{Event, HostResult, Stats};
pub use executor::{DEFAULT_FORKS, Executor, Options};
pub use inventory::Inventory;
pub use playbook::{ParseOptions, Play, load_playbook};
pub use yaml::Loc;

use std::path::{Path, PathBuf};

/// A play-level error: bad input (with its file:line) or I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlayError {
    /// Bad input at a place in a file.
    #[error("{loc}: {msg}")]
    At {
        /// Where.
        loc: Loc,
        /// What.
        msg: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML.
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    /// Anything else (bad options).
    #[error("{0}")]
    Other(String),
}

impl PlayError {
    pub(crate) fn at(loc: &Loc, msg: impl Into<String>) -> Self {
        Self::At {
            loc: loc.clone(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
