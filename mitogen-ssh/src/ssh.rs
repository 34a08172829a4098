//! `ssh`: the system OpenSSH client.

use crate::auth::{PasswordAuth, PromptOn, Secret};
use crate::control::{self, ControlCommand, ControlMaster};
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
    control_master: Option<ControlMaster>,
    control_path: Option<String>,
    control_persist: Option<Duration>,
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
            control_master: None,
            control_path: None,
            control_persist: None,
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

    /// OpenSSH connection sharing (`ControlMaster`; default: not set, so
    /// ssh_config decides, which for a stock ssh means no sharing).
    ///
    /// With [`ControlMaster::Auto`], the first connection to a user, host
    /// and port becomes a master, and later ones (while it lives, see
    /// [`control_persist`](Self::control_persist)) run through it without
    /// a new TCP connection, key exchange or authentication. Unless
    /// [`control_path`](Self::control_path) is set, the socket is
    /// `%C` (ssh's hash of local host, host, port and user) in a
    /// directory made private (0700) on the machine that runs ssh: the
    /// first of `$XDG_RUNTIME_DIR/mitogen-rs/cm`,
    /// `~/.cache/mitogen-rs/cm` and `/tmp/mitogen-rs-cm-<uid>` whose
    /// socket path fits the kernel's limit.
    ///
    /// A master outlives the connection that started it for the persist
    /// time; end it earlier with
    /// [`control_argv`](Self::control_argv)`(`[`ControlCommand::Exit`]`)`.
    /// Anyone who can open the socket can run commands as the remote
    /// user: give a `control_path` only in a directory that is yours alone.
    pub fn control_master(mut self, mode: ControlMaster) -> Self {
        self.control_master = Some(mode);
        self
    }

    /// The control socket (`ControlPath`), with ssh's `%` tokens (`%C`,
    /// `%h`, `%p`, `%r`, ...); its directory must exist. Default: see
    /// [`control_master`](Self::control_master).
    pub fn control_path(mut self, path: impl Into<String>) -> Self {
        self.control_path = Some(path.into());
        self
    }

    /// How long a master stays after its last session ends
    /// (`ControlPersist`, whole seconds, at least 1). Without it the master
    /// ends with the connection that started it.
    pub fn control_persist(mut self, idle: Duration) -> Self {
        self.control_persist = Some(idle);
        self
    }

    /// Connection sharing as Ansible's ssh connection does it:
    /// [`ControlMaster::Auto`], the default private socket path, and a
    /// master that stays `idle` after its last session (Ansible uses 60 s).
    ///
    /// ```
    /// let ssh = mitogen_ssh::Ssh::new("web1").multiplex(std::time::Duration::from_secs(60));
    /// let argv = ssh.argv().join(" ");
    /// assert!(argv.contains("ControlMaster=auto") && argv.contains("ControlPersist=60s"));
    /// assert!(argv.contains("/%C"));
    /// ```
    pub fn multiplex(self, idle: Duration) -> Self {
        self.control_master(ControlMaster::Auto)
            .control_persist(idle)
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
        let mut a = self.common_argv();
        a.push("-T".into());
        a.extend(self.extra_args.iter().cloned());
        a.push(self.host.clone());
        a.push(self.bootstrap.stage0_shell());
        a
    }

    /// The command line that sends `command` to this connection's master
    /// (`ssh -O check|exit|stop`, with the same options, so the same
    /// control socket), for the caller to run.
    ///
    /// ```
    /// use mitogen_ssh::{ControlCommand, Ssh};
    /// let ssh = Ssh::new("deploy@web1").control_path("/run/user/1000/cm/%C");
    /// let argv = ssh.control_argv(ControlCommand::Exit);
    /// assert_eq!(&argv[argv.len() - 3..], ["-O", "exit", "web1"]);
    /// assert!(argv.contains(&"ControlPath=/run/user/1000/cm/%C".to_owned()));
    /// ```
    pub fn control_argv(&self, command: ControlCommand) -> Vec<String> {
        let mut a = self.common_argv();
        a.extend(self.extra_args.iter().cloned());
        a.extend(["-O".into(), command.as_arg().into(), self.host.clone()]);
        a
    }

    /// The control socket path ssh is given, if sharing is configured, and
    /// whether it is in the default directory (which `connect` makes).
    fn control_socket(&self) -> Option<(String, bool)> {
        match (&self.control_path, self.control_master) {
            (Some(p), _) => Some((p.clone(), false)),
            (None, Some(ControlMaster::Auto | ControlMaster::Yes)) => Some((
                control::default_dir_here()
                    .join(control::SOCKET_NAME)
                    .display()
                    .to_string(),
                true,
            )),
            (None, _) => None,
        }
    }

    fn context_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match self.port {
            Some(p) => format!("ssh.{}:{p}", self.host),
            None => format!("ssh.{}", self.host),
        })
    }

    /// Program and options: everything before the destination.
    fn common_argv(&self) -> Vec<String> {
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
        if let Some(m) = self.control_master {
            o(m.as_option().into());
        }
        if let Some((path, _)) = self.control_socket() {
            o(format!("ControlPath={path}"));
        }
        if let Some(idle) = self.control_persist {
            o(format!("ControlPersist={}s", idle.as_secs().max(1)));
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
        a
    }
}

impl Method for Ssh {
    const NAME: &'static str = "ssh";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let name = |_| self.context_name();
        if let Some((path, true)) = self.control_socket() {
            let dir = std::path::Path::new(&path)
                .parent()
                .unwrap_or_else(|| std::path::Path::new("/"));
            let uid = rustix::process::geteuid().as_raw();
            if let Err(e) = control::ensure_private_dir(dir, uid) {
                return Err(ConnectError::Method {
                    name: self.context_name(),
                    source: Box::new(e),
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ssh: &Ssh) -> Vec<String> {
        let a = ssh.argv();
        a.windows(2)
            .filter(|w| w[0] == "-o")
            .map(|w| w[1].clone())
            .collect()
    }

    fn control_opts(ssh: &Ssh) -> Vec<String> {
        opts(ssh)
            .into_iter()
            .filter(|o| o.starts_with("Control"))
            .collect()
    }

    #[test]
    fn no_connection_sharing_options_by_default() {
        assert_eq!(control_opts(&Ssh::new("h")), Vec::<String>::new());
    }

    #[test]
    fn control_options_render_into_argv() {
        let s = Ssh::new("h")
            .control_master(ControlMaster::Auto)
            .control_path("/run/cm/%C")
            .control_persist(Duration::from_millis(90_500));
        assert_eq!(
            control_opts(&s),
            [
                "ControlMaster=auto",
                "ControlPath=/run/cm/%C",
                "ControlPersist=90s"
            ]
        );
        let s = Ssh::new("h").control_master(ControlMaster::No);
        assert_eq!(control_opts(&s), ["ControlMaster=no"]);
        let s = Ssh::new("h")
            .control_master(ControlMaster::Yes)
            .control_persist(Duration::ZERO);
        let o = control_opts(&s);
        assert_eq!(o[0], "ControlMaster=yes");
        assert_eq!(o[2], "ControlPersist=1s");
        // A path alone (ssh_config may set ControlMaster).
        let s = Ssh::new("h").control_path("/x/%C");
        assert_eq!(control_opts(&s), ["ControlPath=/x/%C"]);
    }

    #[test]
    fn multiplex_uses_the_private_default_socket() {
        let s = Ssh::new("deploy@web1:2222").multiplex(Duration::from_secs(60));
        let o = control_opts(&s);
        assert_eq!(o[0], "ControlMaster=auto");
        assert_eq!(o[2], "ControlPersist=60s");
        let want = format!("ControlPath={}/%C", control::default_dir_here().display());
        assert_eq!(o[1], want);
        assert_eq!(s.control_socket().map(|p| p.1), Some(true));
        // The options come before the destination and its command.
        let a = s.argv();
        let at = |x: &str| a.iter().position(|v| v == x).unwrap();
        assert!(at(&o[1]) < at("web1"));
    }

    #[test]
    fn control_argv_talks_to_the_same_socket() {
        let s = Ssh::new("deploy@web1:2222")
            .multiplex(Duration::from_secs(60))
            .identity_file("/k");
        let c = s.control_argv(ControlCommand::Check);
        let a = s.argv();
        // Same program and options, then -O check and the host.
        assert_eq!(&c[..c.len() - 3], &a[..c.len() - 3]);
        assert_eq!(&c[c.len() - 3..], ["-O", "check", "web1"]);
        assert!(!c.contains(&"-T".to_owned()));
        let e = s.control_argv(ControlCommand::Exit);
        assert_eq!(e[e.len() - 2], "exit");
        assert_eq!(s.control_argv(ControlCommand::Stop)[c.len() - 2], "stop");
    }
}
