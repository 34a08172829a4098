//! Finding prompts in what a program printed: the one place that decides
//! whether text on a channel is a question waiting for an answer.
//!
//! A prompt is the *last, unterminated* line of a channel (the program
//! printed it and now waits without a newline), and only the part of it
//! after the position up to which earlier prompts were consumed. So a login
//! banner or sudo lecture that merely mentions "Password:" on a finished
//! line is never answered, and one prompt on screen is one prompt, however
//! many patterns match it.
//!
//! Pure: it looks at strings and keeps a byte offset, nothing else.

use crate::error::sanitise;

/// What the last line of a channel asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prompt {
    /// A password: a pattern matched, and the line has a prompt's shape.
    Password(String),
    /// ssh asks whether to trust an unknown host key.
    HostKey(String),
    /// ssh asks for a key's passphrase (this crate never answers it).
    Passphrase(String),
}

/// One channel's scan position: bytes before `consumed` belong to prompts
/// already handled (or to output printed before them).
#[derive(Debug, Default, Clone)]
pub(crate) struct Cursor {
    consumed: usize,
}

impl Cursor {
    /// The prompt that `text` (everything the channel carried so far) now
    /// ends with, if any; it is consumed, so the same prompt is returned
    /// once. `patterns` are lower-case substrings that mark a password
    /// prompt.
    ///
    /// The candidate is the text after the last newline, and after the
    /// consumed position. A password prompt must contain a pattern and end
    /// with a colon (ASCII or full-width, as ssh, sudo, su and doas print
    /// them in every language they are translated to), or with a pattern
    /// that itself ends in punctuation (a custom prompt given in full, e.g.
    /// `"PIN>"`). A pattern ending in a letter (`"sudo"`) only marks a line:
    /// were it allowed to end one, half a prompt read early
    /// (`"[mitogen-rs sudo"`) would count, and its other half again.
    pub(crate) fn next(&mut self, text: &str, patterns: &[String]) -> Option<Prompt> {
        // `text` only grows, so `consumed` stays on a char boundary; guard
        // anyway, as a caller could hand in a different string.
        let consumed = if text.is_char_boundary(self.consumed.min(text.len())) {
            self.consumed.min(text.len())
        } else {
            text.len()
        };
        let line_start = text.rfind('\n').map_or(0, |i| i + 1);
        let start = line_start.max(consumed);
        let line = sanitise(&text[start..]);
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let lower = line.to_lowercase();
        let prompt = if lower.contains("(yes/no") {
            Prompt::HostKey(line.to_owned())
        } else if lower.contains("enter passphrase for") && ends_like_prompt(&lower) {
            Prompt::Passphrase(line.to_owned())
        } else if patterns.iter().any(|p| lower.contains(p.as_str()))
            && (ends_like_prompt(&lower) || patterns.iter().any(|p| ends_with_pattern(&lower, p)))
        {
            Prompt::Password(line.to_owned())
        } else {
            return None;
        };
        self.consumed = text.len();
        Some(prompt)
    }
}

fn ends_like_prompt(line: &str) -> bool {
    line.ends_with(':') || line.ends_with('：')
}

fn ends_with_pattern(line: &str, pattern: &str) -> bool {
    let p = pattern.trim();
    p.chars()
        .next_back()
        .is_some_and(|c| !c.is_alphanumeric() && !c.is_whitespace())
        && line.ends_with(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_lowercase()).collect()
    }

    /// Feeds `chunks` one after another (each appended to what came
    /// before) and collects what each step reports.
    fn scan(chunks: &[&str], patterns: &[&str]) -> Vec<Option<Prompt>> {
        let patterns = pats(patterns);
        let mut c = Cursor::default();
        let mut text = String::new();
        chunks
            .iter()
            .map(|chunk| {
                text.push_str(chunk);
                c.next(&text, &patterns)
            })
            .collect()
    }

    fn pw(s: &str) -> Option<Prompt> {
        Some(Prompt::Password(s.into()))
    }

    #[test]
    fn banner_lines_are_not_prompts() {
        let banner = "Authorized use only.\nYour Password: must be rotated every 90 days\n";
        assert_eq!(scan(&[banner], &["password:"]), [None]);
        // ... and the real prompt after it is found once.
        assert_eq!(
            scan(&[banner, "mtg-pw@h's password: "], &["password:"]),
            [None, pw("mtg-pw@h's password:")]
        );
        // In one read, too.
        let both = format!("{banner}mtg-pw@h's password: ");
        assert_eq!(scan(&[&both], &["password:"]), [pw("mtg-pw@h's password:")]);
        // An unterminated line that mentions a password but is no prompt.
        assert_eq!(
            scan(&["Your Password: expires in 3 days"], &["password:"]),
            [None]
        );
    }

    #[test]
    fn one_prompt_on_screen_is_one_prompt() {
        // Built-in and custom patterns that both match the same line.
        let p = "[mitogen-rs sudo] password:";
        assert_eq!(
            scan(&[p], &["[mitogen-rs sudo] password:", "password:", "sudo"]),
            [pw(p)]
        );
        // Seen again with nothing new: not a second prompt.
        assert_eq!(scan(&[p, "", " "], &["password:"]), [pw(p), None, None]);
        // Answered (newline echoed), then asked again: a second prompt.
        assert_eq!(
            scan(&[p, "\r\n", "Sorry, try again.\r\n", p], &["password:"]),
            [pw(p), None, None, pw(p)]
        );
        // Asked again on the same line (no newline after the answer).
        assert_eq!(
            scan(&["Password: ", "Password: "], &["password:"]),
            [pw("Password:"), pw("Password:")]
        );
    }

    #[test]
    fn prompt_split_across_reads_is_found_when_complete() {
        assert_eq!(
            scan(&["[mitogen-rs sudo] pass", "word:"], &["password:", "sudo"]),
            [None, pw("[mitogen-rs sudo] password:")]
        );
        // A pattern ending in a letter does not end a prompt early.
        assert_eq!(
            scan(&["[mitogen-rs sudo", "] password:"], &["password:", "sudo"]),
            [None, pw("[mitogen-rs sudo] password:")]
        );
    }

    #[test]
    fn shapes_ssh_sudo_su_doas_print() {
        for (line, pat) in [
            ("mtg-pw@127.0.0.1's password: ", "password:"),
            ("(mtg-pw@127.0.0.1) Password: ", "password:"),
            ("[sudo] password for mtg-sudopw: ", "password"),
            ("Password: ", "password:"),
            ("Passwort: ", "passwort:"),
            ("Mot de passe : ", "mot de passe"),
            ("パスワード：", "パスワード"),
            ("doas (mtg-sudopw@host) password: ", "password:"),
            ("Enter PIN>", "pin>"),
        ] {
            let got = scan(&[line], &[pat]);
            assert_eq!(got, [pw(line.trim())], "{line:?}");
        }
    }

    #[test]
    fn host_key_and_passphrase_questions() {
        let q = "The authenticity of host 'h' can't be established.\nAre you sure you want to continue connecting (yes/no/[fingerprint])? ";
        assert!(matches!(
            scan(&[q], &["password:"])[0],
            Some(Prompt::HostKey(_))
        ));
        assert!(matches!(
            scan(&["Enter passphrase for key '/k': "], &["password:"])[0],
            Some(Prompt::Passphrase(_))
        ));
    }

    #[test]
    fn control_characters_in_the_line_are_applied() {
        // A carriage return and a backspace-erased character before the prompt.
        assert_eq!(
            scan(&["xx\rPassword:x\u{8} \u{8}"], &["password:"]),
            [pw("Password:")]
        );
    }
}
