//! Answering password prompts: one [`Auth`] for every wrapping method.

use crate::error::{AuthError, printed};
use crate::prompt::{Cursor, Prompt};
use mitogen_core::transport::bootstrap::{Auth, Seen, Step};

/// Where a method's prompts appear.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PromptOn {
    /// Only the hybrid-mode terminal (ssh reads every answer from
    /// `/dev/tty`, and prints banners on stderr: never look there).
    Tty,
    /// The hybrid-mode terminal, or stderr (sudo and doas use the
    /// terminal, but fall back to stderr without one).
    TtyOrStderr,
    /// stdout, when the terminal is the data channel, or stderr (`su`,
    /// whose PAM conversation writes to stderr).
    DataOrStderr,
}

type Classify = fn(text: &str, sent_password: bool, timed_out: bool) -> Option<AuthError>;

/// Answers the first password prompt; a second prompt after the answer
/// means the password was wrong.
///
/// Prompts are found by [`Cursor`]: the last unterminated line of a
/// channel, after what earlier prompts consumed, so banner text is never
/// taken for a prompt and a prompt that several patterns match counts once.
pub(crate) struct PasswordAuth {
    pub(crate) program: &'static str,
    pub(crate) password: Option<String>,
    /// Lower-case substrings that mark a password prompt.
    pub(crate) prompts: Vec<String>,
    pub(crate) on: PromptOn,
    pub(crate) classify: Classify,
    /// One per channel that may carry prompts (see [`Self::channels`]).
    cursors: [Cursor; 2],
    answered: bool,
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
            cursors: Default::default(),
            answered: false,
        }
    }

    /// The channels this method's prompts may appear on.
    fn channels<'a>(&self, seen: &'a Seen) -> [Option<&'a str>; 2] {
        match self.on {
            PromptOn::Tty => [Some(&seen.pty), None],
            PromptOn::TtyOrStderr => [Some(&seen.pty), Some(&seen.stderr)],
            PromptOn::DataOrStderr => [Some(&seen.data), Some(&seen.stderr)],
        }
    }

    /// What to do about one new prompt.
    fn answer(&mut self, prompt: Prompt, seen: &Seen) -> Step {
        let fail = |e: AuthError| Step::Fail(Box::new(e));
        match prompt {
            Prompt::HostKey(_) => fail(AuthError::HostKeyUnknown {
                printed: printed(&seen.all()),
            }),
            Prompt::Passphrase(p) => fail(AuthError::UnexpectedPrompt {
                prompt: printed(&p),
            }),
            Prompt::Password(_) if self.answered => fail(AuthError::WrongPassword {
                program: self.program.into(),
                printed: printed(&seen.all()),
            }),
            Prompt::Password(_) => match &self.password {
                Some(p) => {
                    self.answered = true;
                    let mut line = p.clone().into_bytes();
                    line.push(b'\n');
                    Step::Send(line)
                }
                None => fail(AuthError::PasswordRequired {
                    program: self.program.into(),
                }),
            },
        }
    }
}

impl Auth for PasswordAuth {
    fn on_output(&mut self, seen: &Seen) -> Step {
        let channels = self.channels(seen);
        for (i, text) in channels.into_iter().enumerate() {
            let Some(text) = text else { continue };
            if let Some(prompt) = self.cursors[i].next(text, &self.prompts) {
                return self.answer(prompt, seen);
            }
        }
        Step::Continue
    }

    fn classify(
        &mut self,
        seen: &Seen,
        timed_out: bool,
    ) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        (self.classify)(&seen.all(), self.answered, timed_out)
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
    let printed = printed(text);
    let has = |s: &str| text.contains(s);
    Some(
        if has("is not in the sudoers file")
            || has("is not allowed to")
            || has("may not run sudo")
            || has("Operation not permitted")
            || has("not permitted")
        {
            AuthError::NotPermitted {
                program: program.into(),
                printed,
            }
        } else if has("a password is required") || has("Authorization required") {
            AuthError::PasswordRequired {
                program: program.into(),
            }
        } else if has("incorrect password")
            || has("Sorry, try again")
            || has("Authentication failure")
            || has("Authentication failed")
        {
            AuthError::WrongPassword {
                program: program.into(),
                printed,
            }
        } else if has("unknown user") || has("does not exist") || has("No passwd entry") {
            AuthError::UnknownUser {
                program: program.into(),
                printed,
            }
        } else if crate::error::no_shell(text) {
            AuthError::NoShell { printed }
        } else if timed_out {
            AuthError::Timeout { printed }
        } else if sent_password && has("assword") {
            AuthError::WrongPassword {
                program: program.into(),
                printed,
            }
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
