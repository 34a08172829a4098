//! YAML with line numbers, resolved as PyYAML (YAML 1.1) resolves plain
//! scalars, which is what Ansible files are written for (`yes`/`no`/`on`
//! are booleans, `010` is octal).
//!
//! Built on `saphyr-parser`'s event stream: it gives every event a span,
//! so each mapping key and value keeps its line for error messages.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in a file, for messages: `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file.
    pub file: Arc<PathBuf>,
    /// 1-based line (0: unknown).
    pub line: usize,
    /// 1-based column (0: unknown); not shown by `Display`.
    pub col: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// A YAML node with its line.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub y: Y,
    /// 1-based line where it starts.
    pub line: usize,
    /// 1-based column where it starts (0: unknown).
    pub col: usize,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone)]
pub enum Y {
    /// A resolved scalar (null, bool, number, string).
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in file order (keys keep their lines).
    Map(Vec<(String, usize, Node)>),
}

impl Node {
    /// The node as JSON (mapping order kept).
    pub fn to_json(&self) -> Value {
        match &self.y {
            Y::Scalar(v) => v.clone(),
            Y::Seq(s) => Value::Array(s.iter().map(Self::to_json).collect()),
            Y::Map(m) => {
                let mut o = Map::new();
                for (k, _, v) in m {
                    o.insert(k.clone(), v.to_json());
                }
                Value::Object(o)
            }
        }
    }

    /// The value for `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match &self.y {
            Y::Map(m) => m.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The scalar as a string, if it is one (numbers and bools rendered).
    pub fn as_str(&self) -> Option<String> {
        match &self.y {
            Y::Scalar(Value::String(s)) => Some(s.clone()),
            Y::Scalar(Value::Null) => None,
            Y::Scalar(v) => Some(v.to_string()),
            _ => None,
        }
    }
}

/// A YAML file that failed to parse.
#[derive(Debug, thiserror::Error)]
#[error("{loc}: {msg}")]
pub struct YamlError {
    /// Where.
    pub loc: Loc,
    /// What.
    pub msg: String,
}

/// Parses every document of `text` (`file` names it in errors).
///
/// # Errors
/// Syntax errors, unsupported tags, non-scalar mapping keys. (A `!vault`
/// value no secret decrypts fails when a template reads it.)
pub fn parse_all(text: &str, file: &Path) -> Result<Vec<Node>, YamlError> {
    let file = Arc::new(file.to_owned());
    let err = |line: usize, msg: String| YamlError {
        loc: Loc {
            file: file.clone(),
            line,
            col: 0,
        },
        msg,
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut docs = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    for ev in Parser::new_from_str(text) {
        let (ev, span): (Event<'_>, Span) = ev.map_err(|e| {
            let line = e.marker().line();
            err(line, format!("YAML syntax error: {}", e.info()))
        })?;
        let line = span.start.line();
        let col = span.start.col() + 1;
        let done: Option<(Node, usize)> = match ev {
            Event::Scalar(v, style, anchor, tag) => {
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let value = match tag.as_deref() {
                    None => {
                        if style == ScalarStyle::Plain {
                            resolve_plain(&v)
                        } else {
                            Value::String(v.into_owned())
                        }
                    }
                    Some("!unsafe") | Some("tag:yaml.org,2002:str") | Some("!!str") => {
                        Value::String(v.into_owned())
                    }
                    Some("tag:yaml.org,2002:int")
                    | Some("tag:yaml.org,2002:float")
                    | Some("tag:yaml.org,2002:bool")
                    | Some("tag:yaml.org,2002:null") => resolve_plain(&v),
                    // Inline vault: decrypted here, with the run's secrets.
                    Some("!vault") => {
                        Value::String(match crate::vault::decrypt(v.as_bytes()) {
                            Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
                            // Fails when used, as in ansible-core.
                            Err(e) => crate::vault::mark_undecryptable(&e),
                        })
                    }
                    Some(t) => {
                        return Err(err(line, format!("unsupported: the YAML tag {t}")));
                    }
                };
                Some((
                    Node {
                        y: Y::Scalar(value),
                        line,
                        col,
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => Some((n.clone(), 0)),
                None => return Err(err(line, "YAML alias to an unknown anchor".into())),
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), (line, col), anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, (line, col), anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, (l, c), anchor)) => Some((
                    Node {
                        y: Y::Seq(items),
                        line: l,
                        col: c,
                    },
                    anchor,
                )),
                _ => return Err(err(line, "unbalanced YAML sequence".into())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(items, None, (l, c), anchor)) => Some((
                    Node {
                        y: Y::Map(items),
                        line: l,
                        col: c,
                    },
                    anchor,
                )),
                _ => return Err(err(line, "unbalanced YAML mapping".into())),
            },
            _ => None,
        };
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(items, pending, _, _)) => match pending.take() {
                None => {
                    let key = match &node.y {
                        Y::Scalar(Value::String(s)) => s.clone(),
                        Y::Scalar(Value::Null) => "null".into(),
                        Y::Scalar(v) => v.to_string(),
                        _ => {
                            // `<<: *x` merge keys arrive as scalars; other
                            // complex keys have no Ansible meaning.
                            return Err(err(node.line, "a mapping key must be a scalar".into()));
                        }
                    };
                    *pending = Some((key, node.line));
                }
                Some((key, kline)) => {
                    if key == "<<" {
                        let merged: Vec<Node> = match node.y {
                            Y::Map(_) => vec![node],
                            Y::Seq(s) => s,
                            Y::Scalar(_) => {
                                return Err(err(kline, "a merge key needs a mapping".into()));
                            }
                        };
                        for m in merged {
                            if let Y::Map(kv) = m.y {
                                for (k, l, v) in kv {
                                    if !items.iter().any(|(x, _, _)| *x == k) {
                                        items.push((k, l, v));
                                    }
                                }
                            }
                        }
                    } else {
                        // Later keys win, as in PyYAML.
                        items.retain(|(k, _, _)| *k != key);
                        items.push((key, kline, node));
                    }
                }
            },
        }
    }
    Ok(docs)
}

/// Parses a single-document file (an empty file is `null`).
///
/// # Errors
/// As [`parse_all`]; a file of several documents.
pub fn parse_one(text: &str, file: &Path) -> Result<Node, YamlError> {
    let mut docs = parse_all(text, file)?;
    match docs.len() {
        0 => Ok(Node {
            y: Y::Scalar(Value::Null),
            line: 1,
            col: 0,
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(YamlError {
            loc: Loc {
                file: Arc::new(file.to_owned()),
                line: docs[1].line,
                col: 0,
            },
            msg: "expected one YAML document, found several".into(),
        }),
    }
}

/// A collection being built: its items, (line, column) and anchor.
enum Frame {
    Seq(Vec<Node>, (usize, usize), usize),
    Map(
        Vec<(String, usize, Node)>,
        Option<(String, usize)>,
        (usize, usize),
        usize,
    ),
}

/// PyYAML's implicit resolvers for a plain scalar.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return Value::Number(i.into());
    }
    if let Some(f) = parse_float(s) {
        if let Some(n) = Number::from_f64(f) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_owned())
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() || body.starts_with('_') {
        return None;
    }
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let v = if let Some(h) = clean.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = clean.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if clean.len() > 1 && clean.starts_with('0') {
        i64::from_str_radix(&clean[1..], 8).ok()?
    } else if clean.bytes().all(|b| b.is_ascii_digit()) {
        clean.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // PyYAML: [-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?
    let b = s.trim_start_matches(['-', '+']);
    if !b.contains('.')
        || !b
            .bytes()
            .all(|c| c.is_ascii_digit() || b"._eE-+".contains(&c))
    {
        return None;
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    clean.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_scalars_and_lines() {
        let d = parse_one(
            "a: yes\nb: 'yes'\nc: 010\nd: 1.5\ne: ~\nf:\n  - x\n  - {g: 1}\n",
            Path::new("t.yml"),
        )
        .unwrap();
        assert_eq!(
            d.to_json(),
            serde_json::json!({"a": true, "b": "yes", "c": 8, "d": 1.5, "e": null, "f": ["x", {"g": 1}]})
        );
        assert_eq!(d.get("f").unwrap().line, 7);
        let Y::Map(m) = &d.y else { panic!() };
        assert_eq!(m[5].1, 6);
    }

    #[test]
    fn errors_have_lines() {
        let e = parse_all("a: 1\nb: [1, 2\n", Path::new("x.yml")).unwrap_err();
        assert!(e.to_string().starts_with("x.yml:"), "{e}");
        let d = parse_one("a: !vault |\n  xx\n", Path::new("v.yml")).unwrap();
        let a = d.to_json()["a"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            crate::vault::undecryptable(&a),
            Some("Input is not vault encrypted data.")
        );
    }

    #[test]
    fn anchors_and_merge() {
        let d = parse_one("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n", Path::new("t")).unwrap();
        assert_eq!(d.to_json()["b"], serde_json::json!({"k": 1, "j": 2}));
    }
}
