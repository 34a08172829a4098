//! Answering password prompts: one [`Auth`] for every wrapping method.

use crate::error::{AuthError, last_lines};
use mitogen_core::transport::bootstrap::{Auth, Seen, Step};

/// Where a method's prompts appear.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PromptOn {
    /// The hybrid-mode terminal.
    Pty,
    /// stdout, when the terminal is the data channel (`su`).
    Data,
}

type Classify = fn(text: &str, sent_password: bool, timed_out: bool) -> Option<AuthError>;

/// Answers each new password prompt once; a second prompt after an answer
/// means the password was wrong.
pub(crate) struct PasswordAuth {
    pub(crate) program: &'static str,
    pub(crate) password: Option<String>,
    /// Lower-case substrings that mark a password prompt.
    pub(crate) prompts: Vec<String>,
    pub(crate) on: PromptOn,
    pub(crate) classify: Classify,
    answered: usize,
}

impl PasswordAuth {
    pub(crate) fn new(
        program: &'static str,
        password: Option<String>,
        prompts: Vec<String>,
        on: PromptOn,
        classify: Classify,
    ) -> Self {
        let prompts = prompts.into_iter().map(|p| p.to_lowercase()).collect();
        Self {
            program,
            password,
            prompts,
            on,
            classify,
            answered: 0,
        }
    }
}

impl Auth for PasswordAuth {
    fn on_output(&mut self, seen: &Seen) -> Step {
        // Prompts go to the terminal, or, for programs whose terminal is
        // their stdin (su through PAM), to stderr: look at everything the
        // method's own channel is expected to carry.
        let text = match self.on {
            PromptOn::Pty => format!("{}{}", seen.pty, seen.stderr),
            PromptOn::Data => format!("{}{}", seen.data, seen.stderr),
        };
        let lower = text.to_lowercase();
        if lower.contains("(yes/no") {
            return Step::Fail(Box::new(AuthError::HostKeyUnknown {
                printed: last_lines(&seen.all()),
            }));
        }
        if lower.contains("enter passphrase for key") {
            let prompt = last_lines(&text);
            return Step::Fail(Box::new(AuthError::UnexpectedPrompt { prompt }));
        }
        let count: usize = self
            .prompts
            .iter()
            .map(|p| lower.matches(p.as_str()).count())
            .sum();
        if count <= self.answered {
            return Step::Continue;
        }
        if self.answered > 0 {
            let printed = last_lines(&seen.all());
            return Step::Fail(Box::new(AuthError::WrongPassword {
                program: self.program,
                printed,
            }));
        }
        match &self.password {
            Some(p) => {
                self.answered += 1;
                let mut line = p.clone().into_bytes();
                line.push(b'\n');
                Step::Send(line)
            }
            None => Step::Fail(Box::new(AuthError::PasswordRequired {
                program: self.program,
            })),
        }
    }

    fn classify(
        &mut self,
        seen: &Seen,
        timed_out: bool,
    ) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        (self.classify)(&seen.all(), self.answered > 0, timed_out)
            .map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }
}

/// Classifies what sudo, doas or su printed when it failed.
pub(crate) fn classify_become(
    program: &'static str,
    text: &str,
    sent_password: bool,
    timed_out: bool,
) -> Option<AuthError> {
    let printed = last_lines(text);
    let has = |s: &str| text.contains(s);
    Some(
        if has("is not in the sudoers file")
            || has("is not allowed to")
            || has("may not run sudo")
            || has("Operation not permitted")
            || has("not permitted")
        {
            AuthError::NotPermitted { program, printed }
        } else if has("a password is required") || has("Authorization required") {
            AuthError::PasswordRequired { program }
        } else if has("incorrect password")
            || has("Sorry, try again")
            || has("Authentication failure")
            || has("Authentication failed")
        {
            AuthError::WrongPassword { program, printed }
        } else if has("unknown user") || has("does not exist") || has("No passwd entry") {
            AuthError::UnknownUser { program, printed }
        } else if crate::error::no_shell(text) {
            AuthError::NoShell { printed }
        } else if timed_out {
            AuthError::Timeout { printed }
        } else if sent_password && has("assword") {
            AuthError::WrongPassword { program, printed }
        } else {
            return None;
        },
    )
}

/// A password: serialised as is (it must reach the hop that uses it), but
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}
