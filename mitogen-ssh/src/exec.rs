//! A generic exec-prefix method: any command that leaves stdin/stdout
//! connected to `sh` on the target (`nsenter`, `unshare`, `docker exec -i`,
//! `kubectl exec -i`, `chroot`, ...).

use mitogen_core::transport::bootstrap::{self, Bootstrap, NoAuth};
use mitogen_core::transport::{DEFAULT_CONNECT_TIMEOUT, Tty};
use mitogen_core::{ConnectError, Context, Method, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Runs `prefix... sh -c STAGE0`.
///
/// The docker, podman and kubectl presets only build the command line: no
/// container engine runs on the machines this project is tested on, so
/// those are tested as argv, while the method itself is tested with
/// `unshare` and `nsenter`.
///
/// ```
/// let m = mitogen_ssh::Exec::docker("web");
/// assert_eq!(&m.argv()[..4], ["docker", "exec", "-i", "web"]);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exec {
    prefix: Vec<String>,
    name: Option<String>,
    connect_timeout: Duration,
    bootstrap: Bootstrap,
}

impl Exec {
    /// `prefix` is the command and its arguments; `sh -c STAGE0` is appended.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(prefix: I) -> Self {
        Self {
            prefix: prefix.into_iter().map(Into::into).collect(),
            name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            bootstrap: Bootstrap::new(),
        }
    }

    /// `docker exec -i CONTAINER`.
    pub fn docker(container: &str) -> Self {
        Self::new(["docker", "exec", "-i", container]).name(&format!("docker.{container}"))
    }

    /// `podman exec -i CONTAINER`.
    pub fn podman(container: &str) -> Self {
        Self::new(["podman", "exec", "-i", container]).name(&format!("podman.{container}"))
    }

    /// `kubectl exec -i [-n NAMESPACE] POD [-c CONTAINER] --`.
    pub fn kubectl(pod: &str, container: Option<&str>, namespace: Option<&str>) -> Self {
        let mut p = vec!["kubectl".to_owned(), "exec".into(), "-i".into()];
        if let Some(ns) = namespace {
            p.extend(["-n".into(), ns.to_owned()]);
        }
        p.push(pod.to_owned());
        if let Some(c) = container {
            p.extend(["-c".into(), c.to_owned()]);
        }
        p.push("--".into());
        Self::new(p).name(&format!("kubectl.{pod}"))
    }

    /// Names the context (default `exec.<program>`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Deadline for the whole connection (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bootstrap settings.
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// The full command line.
    pub fn argv(&self) -> Vec<String> {
        let mut a = self.prefix.clone();
        a.extend(self.bootstrap.stage0_argv());
        a
    }
}

impl Method for Exec {
    const NAME: &'static str = "exec";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let argv = self.argv();
        let name = |_| {
            self.name
                .clone()
                .unwrap_or_else(|| format!("exec.{}", argv[0]))
        };
        bootstrap::connect_command(
            router,
            name,
            &argv,
            Tty::None,
            &self.bootstrap,
            &mut NoAuth,
            self.connect_timeout,
        )
    }
}
