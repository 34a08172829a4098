//! The local transport: a child process on this machine over a socketpair.

use super::{DEFAULT_CONNECT_TIMEOUT, Session, Tty, allocate_id, attach, spawn_in};
use crate::error::ConnectError;
use crate::{Context, Method, Router};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The argument that starts a program as an agent.
pub const AGENT_ARG: &str = "--mitogen-agent";

/// Options for a local child context: by default this program's own binary
/// (`std::env::current_exe()`) started as an agent.
///
/// ```no_run
/// # fn main() -> Result<(), mitogen_core::Error> {
/// let router = mitogen_core::init(|_| {})?;
/// let child = router.connect(&mitogen_core::Local::new().name("worker"))?;
/// assert_eq!(child.name(), "worker");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Local {
    program: Option<PathBuf>,
    args: Option<Vec<String>>,
    name: Option<String>,
    env: Vec<(String, String)>,
    connect_timeout: Duration,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            program: None,
            args: None,
            name: None,
            env: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl Local {
    /// Defaults: own binary, name `local.<id>`, 30 s connect timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs another binary as the agent (it must register the same functions).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Replaces the arguments (default: `--mitogen-agent`), e.g. to run the
    /// agent through a wrapper.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Names the context (default `local.<id>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long the agent has to greet (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl Method for Local {
    const NAME: &'static str = "local";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let id = allocate_id(router)?;
        let name = self.name.clone().unwrap_or_else(|| format!("local.{id}"));
        let program = match &self.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| ConnectError::Spawn {
                program: "current_exe()".into(),
                source,
            })?,
        };
        let mut cmd = Command::new(&program);
        match &self.args {
            Some(args) => cmd.args(args),
            None => cmd.arg(AGENT_ARG),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Own process group, not session: std then uses posix_spawn instead
        // of forking this (possibly large, many-threaded) process, which
        // was most of a local connect's cost with many children.
        let spawned = spawn_in(id, name, cmd, Tty::None, Session::Group)?;
        attach(router, spawned, self.connect_timeout)
    }
}
