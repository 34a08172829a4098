//! Classified failures of the wrapped programs (ssh, sudo, su, doas).
//!
//! They reach the caller inside `ConnectError::Method`; downcast the source
//! to [`AuthError`] to branch on them:
//!
//! ```
//! # fn demo(e: mitogen_core::ConnectError) {
//! use mitogen_ssh::AuthError;
//! if let mitogen_core::ConnectError::Method { source, .. } = &e {
//!     if let Some(AuthError::WrongPassword { .. }) = source.downcast_ref::<AuthError>() {
//!         eprintln!("ask the user again");
//!     }
//! }
//! # }
//! ```

/// Why a method's program refused to start the agent.
///
/// It is a registered [`mitogen_core::ErrorType`] ([`crate::register`]
/// registers it), so it keeps its type when a connection made by an
/// intermediary fails: `ConnectError::downcast_ref::<AuthError>()` finds it
/// however many hops away the failing method ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AuthError {
    /// The host key does not match the one in known_hosts.
    #[error("host key mismatch (possible man-in-the-middle); ssh said:\n{printed}")]
    HostKeyMismatch {
        /// What the program printed.
        printed: String,
    },
    /// The host key is unknown and host key checking is enforced.
    #[error("host key is not known and checking is enforced; ssh said:\n{printed}")]
    HostKeyUnknown {
        /// What the program printed.
        printed: String,
    },
    /// Authentication failed with every method the server offered.
    #[error("permission denied (methods tried: {methods}); ssh said:\n{printed}")]
    PermissionDenied {
        /// The methods, as ssh listed them (e.g. `publickey,password`).
        methods: String,
        /// What the program printed.
        printed: String,
    },
    /// The password was refused.
    #[error("wrong password; {program} said:\n{printed}")]
    WrongPassword {
        /// `ssh`, `sudo`, `su` or `doas`.
        program: std::borrow::Cow<'static, str>,
        /// What the program printed.
        printed: String,
    },
    /// A password is required but none was given.
    #[error("{program} requires a password and none was given")]
    PasswordRequired {
        /// `sudo` or `doas`.
        program: std::borrow::Cow<'static, str>,
    },
    /// The user may not use sudo (or doas) at all, or not for that target.
    #[error("{program} refused: not permitted; it said:\n{printed}")]
    NotPermitted {
        /// `sudo` or `doas`.
        program: std::borrow::Cow<'static, str>,
        /// What the program printed.
        printed: String,
    },
    /// The target user does not exist.
    #[error("unknown user; {program} said:\n{printed}")]
    UnknownUser {
        /// The program.
        program: std::borrow::Cow<'static, str>,
        /// What the program printed.
        printed: String,
    },
    /// The TCP connection was refused.
    #[error("connection refused; ssh said:\n{printed}")]
    ConnectionRefused {
        /// What the program printed.
        printed: String,
    },
    /// No route to the host (the network or host is unreachable from the
    /// machine that ran ssh).
    #[error("host unreachable; ssh said:\n{printed}")]
    HostUnreachable {
        /// What the program printed.
        printed: String,
    },
    /// The host name does not resolve.
    #[error("unknown host; ssh said:\n{printed}")]
    UnknownHost {
        /// What the program printed.
        printed: String,
    },
    /// The connection or login did not complete in time.
    #[error("timed out connecting{}", suffix(.printed))]
    Timeout {
        /// What the program printed.
        printed: String,
    },
    /// The target has no `sh`.
    #[error("the target has no usable `sh`; it said:\n{printed}")]
    NoShell {
        /// What the program printed.
        printed: String,
    },
    /// The directory for ssh control sockets cannot be made private (see
    /// [`Ssh::control_master`](crate::Ssh::control_master)).
    #[error("cannot use {dir} for ssh control sockets: {problem}")]
    ControlDir {
        /// The directory.
        dir: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The program asked something this method cannot answer.
    #[error("unexpected prompt: {prompt}")]
    UnexpectedPrompt {
        /// The prompt text.
        prompt: String,
    },
}

fn suffix(printed: &str) -> String {
    if printed.trim().is_empty() {
        String::new()
    } else {
        format!("; it printed:\n{}", printed.trim_end())
    }
}

/// Classifies what `ssh` printed when it failed.
pub(crate) fn classify_ssh(text: &str, sent_password: bool, timed_out: bool) -> Option<AuthError> {
    let printed = printed(text);
    let has = |s: &str| text.contains(s);
    Some(
        if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key verification failed") {
            if has("No ") && has("host key is known") {
                AuthError::HostKeyUnknown { printed }
            } else if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || !has("authenticity of host")
            {
                AuthError::HostKeyMismatch { printed }
            } else {
                AuthError::HostKeyUnknown { printed }
            }
        } else if let Some(i) = text.find("Permission denied (") {
            if sent_password {
                AuthError::WrongPassword {
                    program: "ssh".into(),
                    printed,
                }
            } else {
                let rest = &text[i + "Permission denied (".len()..];
                let methods = rest.split(')').next().unwrap_or_default().to_owned();
                AuthError::PermissionDenied { methods, printed }
            }
        } else if has("Connection refused") {
            AuthError::ConnectionRefused { printed }
        } else if has("No route to host") || has("Network is unreachable") {
            AuthError::HostUnreachable { printed }
        } else if has("Could not resolve hostname") || has("Name or service not known") {
            AuthError::UnknownHost { printed }
        } else if has("timed out") || timed_out {
            AuthError::Timeout { printed }
        } else if no_shell(text) {
            AuthError::NoShell { printed }
        } else {
            return None;
        },
    )
}

/// Whether the text says `sh` could not be run.
pub(crate) fn no_shell(text: &str) -> bool {
    text.lines().any(|l| {
        (l.contains("sh: not found")
            || l.contains("sh: command not found")
            || l.contains("sh: No such file"))
            && !l.contains("MITOGEN")
    })
}

/// What a program printed, as errors quote it: [`sanitise`]d, then its
/// last 15 non-blank lines. Every `printed` and `prompt` field of
/// [`AuthError`] is made by this function.
pub(crate) fn printed(text: &str) -> String {
    let clean = sanitise(text);
    let lines: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub(crate) use mitogen_core::transport::sanitise;

impl mitogen_core::ErrorType for AuthError {
    const CODE: &'static str = "mitogen-ssh/auth";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::classify_become;

    #[test]
    fn ssh_messages() {
        let cases: &[(&str, bool, &str)] = &[
            (
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
                false,
                "HostKeyMismatch",
            ),
            (
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.",
                false,
                "HostKeyUnknown",
            ),
            (
                "mtg-key@127.0.0.1: Permission denied (publickey).",
                false,
                "PermissionDenied",
            ),
            (
                "mtg-pw@127.0.0.1: Permission denied (publickey,password).",
                true,
                "WrongPassword",
            ),
            (
                "ssh: connect to host 127.0.0.1 port 1: Connection refused",
                false,
                "ConnectionRefused",
            ),
            (
                "ssh: Could not resolve hostname nope.invalid: Name or service not known",
                false,
                "UnknownHost",
            ),
            (
                "ssh: connect to host 10.0.0.1 port 22: Connection timed out",
                false,
                "Timeout",
            ),
            (
                "ssh: connect to host 10.99.2.2 port 22: No route to host",
                false,
                "HostUnreachable",
            ),
            (
                "ssh: connect to host 10.99.2.2 port 22: Network is unreachable",
                false,
                "HostUnreachable",
            ),
            ("sh: 1: sh: not found", false, "NoShell"),
        ];
        for (text, sent, want) in cases {
            let got = classify_ssh(text, *sent, false).map(|e| format!("{e:?}"));
            assert!(
                got.as_deref().is_some_and(|g| g.starts_with(want)),
                "{text:?}: got {got:?}, want {want}"
            );
        }
        assert_eq!(classify_ssh("something else entirely", false, false), None);
        match classify_ssh(
            "mtg-key@h: Permission denied (publickey,keyboard-interactive).",
            false,
            false,
        ) {
            Some(AuthError::PermissionDenied { methods, .. }) => {
                assert_eq!(methods, "publickey,keyboard-interactive")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn printed_text_is_sanitised() {
        let cases: &[(&str, &str)] = &[
            // sudo pwfeedback: stars typed, then erased with \b \b.
            (
                "[sudo] password: ***\u{8} \u{8}\u{8} \u{8}\r\nSorry, try again.",
                "[sudo] password: *\nSorry, try again.",
            ),
            ("abc\u{8}d", "abd"),
            ("progress 50%\rprogress 100%\r\n", "progress 100%\n"),
            ("\u{1b}[1;31merror\u{1b}[0m: bad", "error: bad"),
            ("\u{1b}]0;title\u{7}after", "after"),
            ("\u{1b}]0;title\u{1b}\\after", "after"),
            (
                "bell\u{7} nul\u{0} del\u{7f} c1\u{9b}",
                "bell\\x07 nul\\x00 del\\x7f c1\\x9b",
            ),
            ("rtl \u{202e}evil", "rtl \\u{202e}evil"),
            ("tab\tkept  \nnext", "tab\tkept\nnext"),
            ("\u{8}\u{8}x", "x"),
            ("trailing escape \u{1b}", "trailing escape"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitise(raw), *want, "{raw:?}");
        }
        let e = classify_become(
            "sudo",
            "[sudo] password: ****\u{8} \u{8}\r\nsudo: 1 incorrect password attempt\u{7}",
            true,
            false,
        )
        .unwrap();
        let shown = e.to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains("[sudo] password: ***\n"), "{shown:?}");
    }

    #[test]
    fn passwords_are_not_debug_printed() {
        let text = format!(
            "{:?} {:?}",
            crate::Ssh::new("h").password("hunter2"),
            crate::Sudo::new("root").password("hunter2")
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn become_messages() {
        let cases: &[(&str, &str)] = &[
            ("mtg-nosudo is not in the sudoers file.", "NotPermitted"),
            ("sudo: a password is required", "PasswordRequired"),
            (
                "Sorry, try again.\nsudo: 3 incorrect password attempts",
                "WrongPassword",
            ),
            ("su: Authentication failure", "WrongPassword"),
            ("doas: Authentication failed", "WrongPassword"),
            ("doas: Operation not permitted", "NotPermitted"),
            ("doas: Authorization required", "PasswordRequired"),
            ("sudo: unknown user nobody2", "UnknownUser"),
            (
                "su: user nobody2 does not exist or the user entry does not contain all the required fields",
                "UnknownUser",
            ),
        ];
        for (text, want) in cases {
            let got = classify_become("sudo", text, false, false).map(|e| format!("{e:?}"));
            assert!(
                got.as_deref().is_some_and(|g| g.starts_with(want)),
                "{text:?}: got {got:?}, want {want}"
            );
        }
    }
}
