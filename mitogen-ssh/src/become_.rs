//! Becoming another user: `sudo`, `su` and `doas`.

use crate::auth::{PasswordAuth, PromptOn, Secret, classify_become};
use crate::error::AuthError;
use mitogen_core::transport::bootstrap::{self, Bootstrap};
use mitogen_core::transport::{DEFAULT_CONNECT_TIMEOUT, Tty};
use mitogen_core::{ConnectError, Context, Method, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The prompt sudo is told to print (`-p`), so prompts are recognised
/// whatever language sudo speaks.
pub const SUDO_PROMPT: &str = "[mitogen-rs sudo] password:";

fn classify_sudo(t: &str, sent: bool, to: bool) -> Option<AuthError> {
    classify_become("sudo", t, sent, to)
}
fn classify_su(t: &str, sent: bool, to: bool) -> Option<AuthError> {
    classify_become("su", t, sent, to)
}
fn classify_doas(t: &str, sent: bool, to: bool) -> Option<AuthError> {
    classify_become("doas", t, sent, to)
}

/// Settings every become method shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Common {
    user: String,
    password: Option<Secret>,
    program: Option<String>,
    extra_args: Vec<String>,
    prompts: Vec<String>,
    connect_timeout: Duration,
    name: Option<String>,
    bootstrap: Bootstrap,
}

impl Common {
    fn new(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            password: None,
            program: None,
            extra_args: Vec::new(),
            prompts: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            name: None,
            bootstrap: Bootstrap::new(),
        }
    }

    /// The program (or `default`), with `-n` when there is no password to
    /// give, so it fails at once instead of prompting.
    fn argv_head(&self, default: &str) -> Vec<String> {
        let mut a = vec![self.program.clone().unwrap_or_else(|| default.into())];
        if self.password.is_none() {
            a.push("-n".into());
        }
        a
    }

    /// Runs `argv`, answering `prompt` on a terminal when there is a password
    /// (hybrid mode), and with no terminal otherwise.
    fn connect_prompting(
        &self,
        router: &Router,
        method: &'static str,
        argv: Vec<String>,
        prompt: &str,
        classify: fn(&str, bool, bool) -> Option<AuthError>,
    ) -> Result<Context, ConnectError> {
        let tty = if self.password.is_some() {
            Tty::Hybrid
        } else {
            Tty::None
        };
        let auth = PasswordAuth::new(
            method,
            self.password.as_ref().map(|p| p.0.clone()),
            vec![prompt.into()],
            PromptOn::TtyOrStderr,
            classify,
        );
        self.run(router, method, argv, tty, auth)
    }

    fn run(
        &self,
        router: &Router,
        method: &str,
        argv: Vec<String>,
        tty: Tty,
        mut auth: PasswordAuth,
    ) -> Result<Context, ConnectError> {
        let name = |_| {
            self.name
                .clone()
                .unwrap_or_else(|| format!("{method}.{}", self.user))
        };
        auth.prompts
            .extend(self.prompts.iter().map(|p| p.to_lowercase()));
        bootstrap::connect_command(
            router,
            name,
            &argv,
            tty,
            &self.bootstrap,
            &mut auth,
            self.connect_timeout,
        )
    }
}

macro_rules! common_setters {
    ($t:ident) => {
        impl $t {
            /// The password, answered on a terminal.
            pub fn password(mut self, password: &str) -> Self {
                self.common.password = Some(Secret(password.to_owned()));
                self
            }
            /// The program to run instead of the one on `PATH`.
            pub fn program(mut self, path: &str) -> Self {
                self.common.program = Some(path.to_owned());
                self
            }
            /// An extra argument for the program.
            pub fn arg(mut self, arg: &str) -> Self {
                self.common.extra_args.push(arg.to_owned());
                self
            }
            /// Another text that marks a password prompt, e.g. a translated
            /// prompt: a case-insensitive substring of the prompt line.
            ///
            /// Only the last, unterminated line the program printed can be
            /// a prompt, and it must end with a colon (ASCII or full-width)
            /// or with this text, if this text ends in punctuation
            /// (`"PIN>"`). It may overlap the built-in prompt: one prompt
            /// on screen is answered once, whichever texts match it.
            pub fn prompt(mut self, text: &str) -> Self {
                self.common.prompts.push(text.to_owned());
                self
            }
            /// Deadline for the whole connection (default 30 s).
            pub fn connect_timeout(mut self, timeout: Duration) -> Self {
                self.common.connect_timeout = timeout;
                self
            }
            /// Names the context (default `<method>.<user>`).
            pub fn name(mut self, name: &str) -> Self {
                self.common.name = Some(name.to_owned());
                self
            }
            /// Bootstrap settings.
            pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
                self.common.bootstrap = bootstrap;
                self
            }
        }
    };
}

/// Become another user with `sudo`.
///
/// Without a password sudo runs with `-n` and fails at once if it would
/// prompt ([`AuthError::PasswordRequired`]); with one, the prompt is set
/// with `-p` and answered on a terminal.
///
/// ```no_run
/// # fn demo(router: &mitogen_core::Router, web: &mitogen_core::Context) -> Result<(), mitogen_core::ConnectError> {
/// let root = router.connect_via(&mitogen_ssh::Sudo::new("root").password("hunter2"), web)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sudo {
    common: Common,
    login: bool,
    preserve_env: bool,
    set_home: bool,
}

common_setters!(Sudo);

impl Sudo {
    /// Become `user` (e.g. `root`).
    pub fn new(user: &str) -> Self {
        Self {
            common: Common::new(user),
            login: false,
            preserve_env: false,
            set_home: true,
        }
    }

    /// Run through the target user's login shell (`-i`).
    pub fn login(mut self, on: bool) -> Self {
        self.login = on;
        self
    }

    /// Keep the environment (`-E`).
    pub fn preserve_env(mut self, on: bool) -> Self {
        self.preserve_env = on;
        self
    }

    /// Set `HOME` to the target's (`-H`, default on, so the agent cache lands
    /// in the target user's home).
    pub fn set_home(mut self, on: bool) -> Self {
        self.set_home = on;
        self
    }

    /// The command line this would run.
    pub fn argv(&self) -> Vec<String> {
        let c = &self.common;
        let mut a = c.argv_head("sudo");
        a.extend(["-u".into(), c.user.clone(), "-p".into(), SUDO_PROMPT.into()]);
        for (on, flag) in [
            (self.login, "-i"),
            (self.preserve_env, "-E"),
            (self.set_home && !self.login, "-H"),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        a.extend(c.extra_args.iter().cloned());
        a.push("--".into());
        a.extend(c.bootstrap.stage0_argv());
        a
    }
}

impl Method for Sudo {
    const NAME: &'static str = "sudo";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        self.common
            .connect_prompting(router, Self::NAME, self.argv(), SUDO_PROMPT, classify_sudo)
    }
}

/// Become another user with `su`. su reads its password from its terminal,
/// so the whole connection runs over a PTY in raw mode (full TTY mode).
/// Root needs no password; anyone else does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Su {
    common: Common,
    login: bool,
}

common_setters!(Su);

impl Su {
    /// Become `user`.
    pub fn new(user: &str) -> Self {
        Self {
            common: Common::new(user),
            login: false,
        }
    }

    /// Start a login shell (`su -`).
    pub fn login(mut self, on: bool) -> Self {
        self.login = on;
        self
    }

    /// The command line this would run.
    pub fn argv(&self) -> Vec<String> {
        let c = &self.common;
        let mut a = vec![c.program.clone().unwrap_or_else(|| "su".into())];
        if self.login {
            a.push("-".into());
        }
        a.extend(c.extra_args.iter().cloned());
        a.extend([c.user.clone(), "-c".into(), c.bootstrap.stage0_shell()]);
        a
    }
}

impl Method for Su {
    const NAME: &'static str = "su";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let c = &self.common;
        let prompts = vec![
            "password:".into(),
            "passwort:".into(),
            "mot de passe".into(),
            "contraseña:".into(),
        ];
        let auth = PasswordAuth::new(
            "su",
            c.password.as_ref().map(|p| p.0.clone()),
            prompts,
            PromptOn::DataOrStderr,
            classify_su,
        );
        c.run(router, "su", self.argv(), Tty::Full, auth)
    }
}

/// Become another user with `doas` (OpenBSD's, Debian's `opendoas`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doas {
    common: Common,
}

common_setters!(Doas);

impl Doas {
    /// Become `user`.
    pub fn new(user: &str) -> Self {
        Self {
            common: Common::new(user),
        }
    }

    /// The command line this would run.
    pub fn argv(&self) -> Vec<String> {
        let c = &self.common;
        let mut a = c.argv_head("doas");
        a.extend(["-u".into(), c.user.clone()]);
        a.extend(c.extra_args.iter().cloned());
        a.extend(c.bootstrap.stage0_argv());
        a
    }
}

impl Method for Doas {
    const NAME: &'static str = "doas";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        self.common
            .connect_prompting(router, Self::NAME, self.argv(), "password:", classify_doas)
    }
}
