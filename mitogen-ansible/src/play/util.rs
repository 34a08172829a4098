//! Small parsers Ansible's formats share.

use serde_json::{Map, Value};

/// POSIX shell-like splitting (INI host lines, ssh args).
///
/// # Errors
/// Unbalanced quotes.
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    crate::pycompat::shlex_split(s).ok_or_else(|| format!("unbalanced quotes in: {s}"))
}

/// Ansible's `parse_kv`: `k=v` tokens become arguments (values stay
/// strings); with `free_form`, the other tokens are joined into
/// `_raw_params`. Without it they are an error.
///
/// # Errors
/// Unbalanced quotes; a bare word where only `k=v` is allowed.
pub fn parse_kv(s: &str, free_form: bool) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut raw: Vec<String> = Vec::new();
    for tok in split_args(s)? {
        // ansible-core decodes backslash escapes in a `k=v` token (not in
        // free-form words), then unquotes the value.
        let decoded = decode_escapes(&tok);
        match decoded.split_once('=') {
            Some((k, v))
                if !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && (!free_form || FREE_FORM_KEYS.contains(&k)) =>
            {
                out.insert(k.to_owned(), Value::String(unquote(v)));
            }
            _ if free_form => raw.push(tok),
            _ => return Err(format!("expected key=value arguments, found '{tok}'")),
        }
    }
    if free_form {
        out.insert("_raw_params".into(), Value::String(raw.join(" ")));
    }
    Ok(out)
}

/// ansible-core's `_decode_escapes`: Python's unicode-escape sequences
/// (`\\`, `\'`, `\"`, `\a\b\f\n\r\t\v`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`,
/// octal `\NNN`) become the characters; anything else is kept as is.
fn decode_escapes(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<char> {
        let t: String = cs.get(from..from + n)?.iter().collect();
        if t.len() != n || !t.chars().all(|c| c.is_ascii_hexdigit()) {
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
        let n = cs[i + 1];
        let simple = match n {
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
        let (width, skip) = match n {
            'x' => (2, 2),
            'u' => (4, 2),
            'U' => (8, 2),
            _ => (0, 0),
        };
        if width > 0 {
            if let Some(ch) = hex(i + skip, width) {
                out.push(ch);
                i += skip + width;
                continue;
            }
        } else if n.is_digit(8) {
            let len = cs[i + 1..]
                .iter()
                .take(3)
                .take_while(|c| c.is_digit(8))
                .count();
            let t: String = cs[i + 1..i + 1 + len].iter().collect();
            if let Some(ch) = u32::from_str_radix(&t, 8).ok().and_then(char::from_u32) {
                out.push(ch);
                i += 1 + len;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Keys `command`/`shell` take out of their free form.
const FREE_FORM_KEYS: &[&str] = &[
    "chdir",
    "creates",
    "removes",
    "executable",
    "stdin",
    "stdin_add_newline",
    "strip_empty_ends",
    "expand_argument_vars",
];

/// Splits on whitespace outside quotes and Jinja blocks, keeping quotes.
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        let next = cs.get(i + 1).copied();
        if quote.is_none() && c == '{' && matches!(next, Some('{') | Some('%')) {
            depth += 1;
            cur.push(c);
            cur.push(next.unwrap_or('{'));
            i += 2;
            continue;
        }
        if quote.is_none() && depth > 0 && matches!(c, '}' | '%') && next == Some('}') {
            depth -= 1;
            cur.push(c);
            cur.push('}');
            i += 2;
            continue;
        }
        match (c, quote) {
            ('\\', _) if next.is_some() => {
                cur.push(c);
                cur.push(next.unwrap_or(' '));
                i += 2;
                continue;
            }
            ('"' | '\'', None) if depth == 0 => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (w, None) if w.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    if quote.is_some() {
        return Err(format!("unbalanced quotes in: {s}"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_owned();
        }
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
}
