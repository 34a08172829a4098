//! Small parsers Ansible's formats share.

use serde_json::{Map, Value};

/// POSIX shell-like splitting (INI host lines, ssh args).
///
/// # Errors
/// Unbalanced quotes.
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    mitogen_ansible::pycompat::shlex_split(s).ok_or_else(|| format!("unbalanced quotes in: {s}"))
}

/// Ansible's `parse_kv` (`ansible.parsing.splitter`): `k=v` tokens become
/// arguments (values stay strings); with `free_form`, the other tokens are
/// kept as written, newlines and runs of spaces included, in `_raw_params`
/// (ansible-core's `join_args`). Without it they are an error.
///
/// # Errors
/// Unbalanced quotes or Jinja blocks; a bare word where only `k=v` is
/// allowed.
pub fn parse_kv(s: &str, free_form: bool) -> Result<Map<String, Value>, String> {
    let (mut out, raw) = parse_kv_words(s, free_form)?;
    if !raw.is_empty() {
        if !free_form {
            return Err(format!(
                "expected key=value arguments, found '{}'",
                raw[0].trim()
            ));
        }
        out.insert("_raw_params".into(), Value::String(join_args(&raw)));
    }
    Ok(out)
}

/// A module's `k=v` arguments in `s` (all but free-form ones when
/// `free_form`) and its other words, joined as ansible-core joins its
/// `_raw_params` (`None`: there are none).
///
/// # Errors
/// Unbalanced quotes or template delimiters.
pub fn parse_kv_raw(s: &str) -> Result<(Map<String, Value>, Option<String>), String> {
    let (out, raw) = parse_kv_words(s, false)?;
    Ok((out, (!raw.is_empty()).then(|| join_args(&raw))))
}

fn parse_kv_words(s: &str, free_form: bool) -> Result<(Map<String, Value>, Vec<String>), String> {
    let mut out = Map::new();
    let mut raw: Vec<String> = Vec::new();
    for orig in split_args(s)? {
        // ansible-core decodes backslash escapes in a token to find and
        // read `k=v`; free-form words keep what was written.
        let x = decode_escapes(&orig);
        let Some(pos) = kv_split(&x) else {
            if x.contains('=') {
                // Only escaped `\=`: a word.
                raw.push(x.replace("\\=", "="));
            } else {
                raw.push(orig);
            }
            continue;
        };
        let (k, v) = (&x[..pos], &x[pos + 1..]);
        if free_form && !FREE_FORM_KEYS.contains(&k) {
            raw.push(orig);
        } else {
            out.insert(k.trim().to_owned(), Value::String(unquote(v.trim())));
        }
    }
    Ok((out, raw))
}

/// The first `=` after the first character that no backslash escapes.
fn kv_split(x: &str) -> Option<usize> {
    let b = x.as_bytes();
    (1..b.len()).find(|&i| b[i] == b'=' && b[i - 1] != b'\\')
}

/// ansible-core 2.19's `_decode_escapes`: Python's unicode-escape sequences
/// `\\`, `\'`, `\"`, `\a\b\f\n\r\t\v`, `\xHH`, `\uHHHH`, `\UHHHHHHHH` become
/// the characters; anything else (`\1`, octal, `\d`) is kept as written.
fn decode_escapes(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<char> {
        let t: String = cs.get(from..from + n)?.iter().collect();
        if !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(&t, 16).ok().and_then(char::from_u32)
    };
    while i < cs.len() {
        let c = cs[i];
        if c != '\\' || i + 1 >= cs.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let simple = match cs[i + 1] {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            i += 2;
            continue;
        }
        let width = match cs[i + 1] {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => 0,
        };
        if let Some(ch) = (width > 0).then(|| hex(i + 2, width)).flatten() {
            out.push(ch);
            i += 2 + width;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Keys `command`/`shell` take out of their free form (ansible-core's list
/// in `parse_kv`, `warn` included: the module then rejects it).
const FREE_FORM_KEYS: &[&str] = &[
    "creates",
    "removes",
    "chdir",
    "executable",
    "warn",
    "stdin",
    "stdin_add_newline",
    "strip_empty_ends",
];

/// ansible-core's `split_args`: splits on spaces and newlines, keeping
/// quoted strings and Jinja blocks (`{{ }}`, `{% %}`, `{# #}`) whole with
/// their quotes, a trailing newline on each line's last token, and extra
/// spaces on the token before them, so [`join_args`] gives back what was
/// written. A lone `\` outside quotes continues the line.
fn split_args(args: &str) -> Result<Vec<String>, String> {
    let mut params: Vec<String> = Vec::new();
    if args.is_empty() {
        return Ok(params);
    }
    let items: Vec<&str> = args.split('\n').collect();
    let mut quote: Option<char> = None;
    let (mut print_d, mut block_d, mut comment_d) = (0usize, 0usize, 0usize);
    for (itemidx, item) in items.iter().enumerate() {
        let mut line_continuation = false;
        for (idx, token) in item.split(' ').enumerate() {
            if token.is_empty() && idx != 0 {
                if params.is_empty() {
                    params.push(String::new());
                }
                if let Some(last) = params.last_mut() {
                    last.push(' ');
                }
                continue;
            }
            let inside_before = quote.is_some();
            if token == "\\" && !inside_before {
                line_continuation = true;
                continue;
            }
            quote = quote_state(token, quote);
            let inside = quote.is_some();
            let in_jinja = print_d > 0 || block_d > 0 || comment_d > 0;
            let mut appended = false;
            if inside && !inside_before && !in_jinja {
                params.push(token.to_owned());
                appended = true;
            } else if in_jinja || inside || inside_before {
                match params.last_mut() {
                    Some(last) => {
                        if idx > 0 {
                            last.push(' ');
                        }
                        last.push_str(token);
                    }
                    None => params.push(token.to_owned()),
                }
                appended = true;
            }
            for (depth, open, close) in [
                (&mut print_d, "{{", "}}"),
                (&mut block_d, "{%", "%}"),
                (&mut comment_d, "{#", "#}"),
            ] {
                let before = *depth;
                *depth = jinja_depth(token, before, open, close);
                if *depth != before && !appended {
                    params.push(token.to_owned());
                    appended = true;
                }
            }
            let in_jinja = print_d > 0 || block_d > 0 || comment_d > 0;
            if !in_jinja && quote.is_none() && !appended && !token.is_empty() {
                params.push(token.to_owned());
            }
        }
        if items.len() > 1 && itemidx != items.len() - 1 && !line_continuation {
            if params.is_empty() {
                params.push(String::new());
            }
            if let Some(last) = params.last_mut() {
                last.push('\n');
            }
        }
    }
    if print_d > 0 || block_d > 0 || comment_d > 0 || quote.is_some() {
        return Err(format!(
            "failed at splitting arguments, either an unbalanced jinja2 block or quotes: {args}"
        ));
    }
    Ok(params)
}

/// ansible-core's `_get_quote_state`: the quote left open after `token`.
fn quote_state(token: &str, mut quote: Option<char>) -> Option<char> {
    let mut prev: Option<char> = None;
    for c in token.chars() {
        if (c == '"' || c == '\'') && prev != Some('\\') {
            match quote {
                Some(q) if q == c => quote = None,
                Some(_) => {}
                None => quote = Some(c),
            }
        }
        prev = Some(c);
    }
    quote
}

/// ansible-core's `_count_jinja2_blocks`.
fn jinja_depth(token: &str, depth: usize, open: &str, close: &str) -> usize {
    let (o, c) = (token.matches(open).count(), token.matches(close).count());
    if o == c {
        depth
    } else {
        (depth + o).saturating_sub(c)
    }
}

/// ansible-core's `join_args`: the words back together, a space between
/// two unless the first ends a line.
fn join_args(words: &[String]) -> String {
    let mut out = String::new();
    for w in words {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// ansible-core's `unquote`: one pair of matching outer quotes, unless the
/// closing one is escaped.
fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() > 1
        && b[0] == b[b.len() - 1]
        && (b[0] == b'"' || b[0] == b'\'')
        && b[b.len() - 2] != b'\\'
    {
        return v[1..v.len() - 1].to_owned();
    }
    v.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decoded_in_kv_values() {
        let m = parse_kv(r#"content="hello\n" x=a\tb"#, false).unwrap();
        assert_eq!(m["content"], "hello\n");
        assert_eq!(m["x"], "a\tb");
        // Free-form words keep their backslashes.
        let m = parse_kv(r"echo a\nb", true).unwrap();
        assert_eq!(m["_raw_params"], r"echo a\nb");
    }

    #[test]
    fn kv() {
        let m = parse_kv("msg=\"hi {{ x }}\" y=2", false).unwrap();
        assert_eq!(m["msg"], "hi {{ x }}");
        assert_eq!(m["y"], "2");
        let m = parse_kv("echo a=b chdir=/tmp", true).unwrap();
        assert_eq!(m["_raw_params"], "echo a=b");
        assert_eq!(m["chdir"], "/tmp");
        assert!(parse_kv("bare", false).is_err());
    }

    /// Outputs of ansible-core 2.19's `parse_kv(s, check_raw=True)`.
    #[test]
    fn free_form_keeps_lines_and_spaces_as_ansible_core() {
        let raw = |s: &str| parse_kv(s, true).unwrap()["_raw_params"].clone();
        assert_eq!(raw("echo one\necho two\n"), "echo one\necho two\n");
        assert_eq!(
            raw("for i in 1 2; do\n  echo $i\ndone\n"),
            "for i in 1 2; do\n  echo $i\ndone\n"
        );
        assert_eq!(raw("echo  'a  b'   c"), "echo  'a  b'   c");
        assert_eq!(
            raw("cat <<EOF\nx {{ y }}\nEOF"),
            "cat <<EOF\nx {{ y }}\nEOF"
        );
        assert_eq!(raw("echo a \\\nb"), "echo a b");
        let m = parse_kv("echo hi chdir=/tmp\n", true).unwrap();
        assert_eq!(m["chdir"], "/tmp");
        assert!(parse_kv("echo 'open", true).is_err());
        assert!(parse_kv("echo {{ x", true).is_err());
        // `\1` is not an escape ansible-core 2.19 decodes; `\=` is a word.
        let m = parse_kv(r#"replace='"\1"' x=a\=b"#, false).unwrap();
        assert_eq!(m["replace"], r#""\1""#);
        assert_eq!(m["x"], "a\\=b");
    }
}
