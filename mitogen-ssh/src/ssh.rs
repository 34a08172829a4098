//! `ssh`: the system OpenSSH client.

use crate::auth::{PasswordAuth, PromptOn, Secret};
use crate::error::classify_ssh;
use mitogen_core::transport::bootstrap::{self, Bootstrap};
use mitogen_core::transport::{DEFAULT_CONNECT_TIMEOUT, Tty};
use mitogen_core::{ConnectError, Context, Method, Router};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What to do about the target's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HostKeyChecking {
    /// The key must already be in known_hosts (`StrictHostKeyChecking=yes`).
    #[default]
    Enforce,
    /// Unknown keys are added, changed keys refused (`accept-new`).
    AcceptNew,
    /// No checking at all (`StrictHostKeyChecking=no`, known_hosts
    /// `/dev/null` unless a file is given). For throw-away test hosts only.
    Ignore,
}

impl HostKeyChecking {
    fn as_option(self) -> &'static str {
        match self {
            Self::Enforce => "StrictHostKeyChecking=yes",
            Self::AcceptNew => "StrictHostKeyChecking=accept-new",
            Self::Ignore => "StrictHostKeyChecking=no",
        }
    }
}

/// A connection over `ssh`: runs the system OpenSSH client, so
/// `~/.ssh/config`, agents, `ProxyJump` and certificates keep working.
///
/// ```no_run
/// # fn main() -> Result<(), mitogen_core::Error> {
/// let router = mitogen_core::init(mitogen_ssh::register)?;
/// let web = router.connect(&mitogen_ssh::Ssh::new("web1.example.com").user("deploy").port(2222))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ssh {
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    ssh_path: String,
    extra_args: Vec<String>,
    options: Vec<(String, String)>,
    host_key_checking: HostKeyChecking,
    known_hosts_file: Option<PathBuf>,
    password: Option<Secret>,
    connect_timeout: Duration,
    keepalive: Option<Duration>,
    compression: bool,
    name: Option<String>,
    bootstrap: Bootstrap,
}

impl Ssh {
    /// `host` may be `user@host`, `host:port` or `user@host:port`.
    pub fn new(host: &str) -> Self {
        let (user, rest) = match host.split_once('@') {
            Some((u, r)) => (Some(u.to_owned()), r),
            None => (None, host),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse() {
                Ok(port) => (h.to_owned(), Some(port)),
                Err(_) => (rest.to_owned(), None),
            },
            _ => (rest.to_owned(), None),
        };
        Self {
            host,
            user,
            port,
            identity_file: None,
            ssh_path: "ssh".into(),
            extra_args: Vec::new(),
            options: Vec::new(),
            host_key_checking: HostKeyChecking::Enforce,
            known_hosts_file: None,
            password: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: Some(Duration::from_secs(15)),
            compression: false,
            name: None,
            bootstrap: Bootstrap::new(),
        }
    }

    /// Login user (`-l`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// Port (`-p`).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Private key (`-i`, with `IdentitiesOnly=yes`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// The ssh program (default `ssh` on `PATH`).
    pub fn ssh_path(mut self, path: &str) -> Self {
        self.ssh_path = path.to_owned();
        self
    }

    /// Extra arguments placed before the host.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// An `-o key=value` option.
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Host key policy (default [`HostKeyChecking::Enforce`]).
    pub fn host_key_checking(mut self, policy: HostKeyChecking) -> Self {
        self.host_key_checking = policy;
        self
    }

    /// A known_hosts file instead of the user's own.
    pub fn known_hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts_file = Some(path.into());
        self
    }

    /// A password, answered on a terminal; without one ssh runs in batch
    /// mode and never prompts.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(Secret(password.to_owned()));
        self
    }

    /// Deadline for the whole connection, TCP to agent greeting (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Keepalive interval (`ServerAliveInterval`, default 15 s; `None` off).
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval;
        self
    }

    /// ssh compression (default off: it slows bulk transfer several-fold).
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Names the context (default `ssh.<host>`, or `ssh.<host>:<port>`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Bootstrap settings (agent binaries per platform, cache, gzip).
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// The ssh command line this would run (program first).
    pub fn argv(&self) -> Vec<String> {
        let mut a = vec![self.ssh_path.clone()];
        let mut o = |opt: String| {
            a.push("-o".into());
            a.push(opt);
        };
        if self.password.is_none() {
            o("BatchMode=yes".into());
        }
        o(format!(
            "ConnectTimeout={}",
            self.connect_timeout.as_secs().max(1)
        ));
        o(self.host_key_checking.as_option().into());
        match (&self.known_hosts_file, self.host_key_checking) {
            (Some(f), _) => o(format!("UserKnownHostsFile={}", f.display())),
            (None, HostKeyChecking::Ignore) => o("UserKnownHostsFile=/dev/null".into()),
            _ => {}
        }
        if let Some(k) = self.keepalive {
            o(format!("ServerAliveInterval={}", k.as_secs().max(1)));
            o("ServerAliveCountMax=3".into());
        }
        o(format!(
            "Compression={}",
            if self.compression { "yes" } else { "no" }
        ));
        if self.identity_file.is_some() {
            o("IdentitiesOnly=yes".into());
        }
        for (k, v) in &self.options {
            o(format!("{k}={v}"));
        }
        if let Some(f) = &self.identity_file {
            a.extend(["-i".into(), f.display().to_string()]);
        }
        if let Some(p) = self.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(u) = &self.user {
            a.extend(["-l".into(), u.clone()]);
        }
        a.push("-T".into());
        a.extend(self.extra_args.iter().cloned());
        a.push(self.host.clone());
        a.push(self.bootstrap.stage0_shell());
        a
    }
}

impl Method for Ssh {
    const NAME: &'static str = "ssh";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let name = |_| {
            self.name.clone().unwrap_or_else(|| match self.port {
                Some(p) => format!("ssh.{}:{p}", self.host),
                None => format!("ssh.{}", self.host),
            })
        };
        let tty = if self.password.is_some() {
            Tty::Hybrid
        } else {
            Tty::None
        };
        let mut auth = PasswordAuth::new(
            "ssh",
            self.password.as_ref().map(|p| p.0.clone()),
            vec!["password:".into()],
            PromptOn::Tty,
            classify_ssh,
        );
        bootstrap::connect_command(
            router,
            name,
            &self.argv(),
            tty,
            &self.bootstrap,
            &mut auth,
            self.connect_timeout,
        )
    }
}
