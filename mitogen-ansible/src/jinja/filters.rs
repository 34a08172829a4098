//! Ansible's filters and tests (`plugins/filter/core.py`,
//! `plugins/test/core.py`, ...) beside minijinja's builtins, as one set
//! every environment of the crate gets ([`add`]).

use super::undefined;
use crate::pycompat::{b64decode, b64encode, json_dumps_indent, py_repr};
use minijinja::value::{Kwargs, Rest, Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind};
use regex::Regex;
use serde_json::{Map, Value};

fn jerr(msg: impl Into<String>) -> JError {
    JError::new(ErrorKind::InvalidOperation, msg.into())
}

use super::jv_to_json;

fn py_regex(pattern: &str, ignorecase: bool, multiline: bool) -> Result<Regex, JError> {
    let mut p = String::new();
    if ignorecase {
        p.push_str("(?i)");
    }
    if multiline {
        p.push_str("(?m)");
    }
    // Python's named groups (?P<n>..) are accepted by the regex crate.
    p.push_str(pattern);
    Regex::new(&p).map_err(|e| jerr(format!("invalid regular expression {pattern:?}: {e}")))
}

/// Python's `re.sub` replacement template in the regex crate's syntax:
/// `\1`..`\99` and `\g<name>`/`\g<1>` name groups, `\0` and `\NNN` are
/// octal, `\n\t\r\a\b\f\v\\` characters; another `\` + ASCII letter is
/// Python's "bad escape" error; any other `\x` stays as written.
fn py_replacement(r: &str) -> Result<String, JError> {
    let mut out = String::new();
    let cs: Vec<char> = r.chars().collect();
    let mut i = 0;
    let group = |out: &mut String, g: &str| out.push_str(&format!("${{{g}}}"));
    while i < cs.len() {
        let c = cs[i];
        if c == '$' {
            out.push_str("$$");
            i += 1;
            continue;
        }
        if c != '\\' || i + 1 == cs.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = cs[i + 1];
        let octal = |k: usize| cs.get(k).is_some_and(|c| c.is_digit(8));
        match n {
            '0' | '1'..='7' if n == '0' || (octal(i + 2) && octal(i + 3)) => {
                let len = (1..=3).take_while(|&k| octal(i + k)).count();
                let t: String = cs[i + 1..i + 1 + len].iter().collect();
                let v = u32::from_str_radix(&t, 8).unwrap_or(0);
                out.push(char::from_u32(v).unwrap_or('\0'));
                i += 1 + len;
            }
            '1'..='9' => {
                let len = if cs.get(i + 2).is_some_and(char::is_ascii_digit) {
                    2
                } else {
                    1
                };
                let g: String = cs[i + 1..i + 1 + len].iter().collect();
                group(&mut out, &g);
                i += 1 + len;
            }
            'g' => {
                let rest: String = cs[i + 2..].iter().collect();
                let Some(name) = rest.strip_prefix('<').and_then(|r| r.split_once('>')) else {
                    return Err(jerr(format!("missing group name at position {}", i + 2)));
                };
                group(&mut out, name.0);
                i += 3 + name.0.chars().count() + 1;
            }
            'n' | 't' | 'r' | 'a' | 'b' | 'f' | 'v' | '\\' => {
                out.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    _ => '\\',
                });
                i += 2;
            }
            l if l.is_ascii_alphabetic() => {
                return Err(jerr(format!("bad escape \\{l} at position {i}")));
            }
            _ => {
                out.push('\\');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn result_flag(v: &JValue, key: &str) -> Result<bool, JError> {
    if v.kind() != ValueKind::Map {
        return Err(jerr(format!(
            "the '{key}' test expects a dictionary (a registered result)"
        )));
    }
    Ok(v.get_attr(key).map(|x| x.is_true()).unwrap_or(false))
}

pub(super) fn add(env: &mut Environment<'static>) {
    env.add_filter("d", default);
    env.add_filter("default", default);
    env.add_filter("bool", to_bool);
    env.add_filter("int", to_int);
    env.add_filter("float", to_float);
    env.add_filter(
        "to_json",
        |v: JValue, _k: Kwargs| -> Result<String, JError> {
            Ok(json_dumps_indent(&jv_to_json(&v), None))
        },
    );
    env.add_filter(
        "to_nice_json",
        |v: JValue, k: Kwargs| -> Result<String, JError> {
            let indent: Option<usize> = k.get("indent")?;
            Ok(json_dumps_indent(
                &sort_keys(jv_to_json(&v)),
                Some(indent.unwrap_or(4)),
            ))
        },
    );
    env.add_filter("from_json", |s: String| -> Result<JValue, JError> {
        let v: Value = serde_json::from_str(&s).map_err(|e| jerr(format!("from_json: {e}")))?;
        Ok(undefined::to_value(&v))
    });
    env.add_filter("from_yaml", |s: String| -> Result<JValue, JError> {
        let n = crate::yaml::parse_one(&s, std::path::Path::new("<from_yaml>"))
            .map_err(|e| jerr(e.to_string()))?;
        Ok(undefined::to_value(&n.to_json()))
    });
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("regex_escape", |s: String| regex::escape(&s));
    env.add_filter("ternary", ternary);
    env.add_filter("mandatory", mandatory);
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("basename", |s: String| {
        s.rsplit('/').next().unwrap_or("").to_owned()
    });
    env.add_filter("dirname", |s: String| match s.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => s[..i].to_owned(),
        None => String::new(),
    });
    env.add_filter("splitext", |s: String| {
        let base_start = s.rfind('/').map_or(0, |i| i + 1);
        match s[base_start..].rfind('.') {
            Some(i) if i > 0 => {
                let i = base_start + i;
                JValue::from(vec![s[..i].to_owned(), s[i..].to_owned()])
            }
            _ => JValue::from(vec![s.clone(), String::new()]),
        }
    });
    env.add_filter("quote", |s: String| crate::pycompat::shlex_quote(&s));
    env.add_filter("urlencode", urlencode);
    env.add_filter("b64encode", |s: String| b64encode(s.as_bytes()));
    env.add_filter("b64decode", |s: String| -> Result<String, JError> {
        let b = b64decode(&s).ok_or_else(|| jerr("b64decode: invalid base64"))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    });
    env.add_filter("union", |a: JValue, b: JValue| -> Result<JValue, JError> {
        let mut out = unique_list(&a)?;
        for x in unique_list(&b)? {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        Ok(JValue::from(out))
    });
    env.add_filter(
        "intersect",
        |a: JValue, b: JValue| -> Result<JValue, JError> {
            let b = unique_list(&b)?;
            Ok(JValue::from(
                unique_list(&a)?
                    .into_iter()
                    .filter(|x| b.contains(x))
                    .collect::<Vec<_>>(),
            ))
        },
    );
    env.add_filter(
        "difference",
        |a: JValue, b: JValue| -> Result<JValue, JError> {
            let b = unique_list(&b)?;
            Ok(JValue::from(
                unique_list(&a)?
                    .into_iter()
                    .filter(|x| !b.contains(x))
                    .collect::<Vec<_>>(),
            ))
        },
    );
    env.add_filter(
        "flatten",
        |a: JValue, levels: Option<usize>| -> Result<JValue, JError> {
            let mut out = Vec::new();
            flatten(&a, levels, &mut out)?;
            Ok(JValue::from(out))
        },
    );
    env.add_filter("type_debug", |v: JValue| super::py_type(&v).to_owned());
    env.add_filter(
        "zip",
        |a: JValue, rest: Rest<JValue>| -> Result<JValue, JError> {
            let mut lists = vec![a.try_iter()?.collect::<Vec<_>>()];
            for r in rest.iter() {
                lists.push(r.try_iter()?.collect());
            }
            let n = lists.iter().map(Vec::len).min().unwrap_or(0);
            Ok(JValue::from(
                (0..n)
                    .map(|i| JValue::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>()))
                    .collect::<Vec<_>>(),
            ))
        },
    );
    // `extract(item, container, morekeys)`: container[item][k]...;
    // what is missing is undefined (`map('extract', hostvars, 'x')`).
    env.add_filter(
        "extract",
        |item: JValue, container: JValue, more: Option<JValue>| -> Result<JValue, JError> {
            let mut keys = vec![item];
            match more {
                Some(m) if m.kind() == ValueKind::Seq => keys.extend(m.try_iter()?),
                Some(m) if !m.is_undefined() && !m.is_none() => keys.push(m),
                _ => {}
            }
            let mut v = container;
            for k in &keys {
                if v.is_undefined() {
                    break;
                }
                v = v.get_item(k).unwrap_or(JValue::UNDEFINED);
            }
            Ok(v)
        },
    );
    env.add_filter(
        "product",
        |a: JValue, b: JValue| -> Result<JValue, JError> {
            let a: Vec<JValue> = a.try_iter()?.collect();
            let b: Vec<JValue> = b.try_iter()?.collect();
            let mut out = Vec::new();
            for x in &a {
                for y in &b {
                    out.push(JValue::from(vec![x.clone(), y.clone()]));
                }
            }
            Ok(JValue::from(out))
        },
    );

    // `is defined` and `is undefined` use up why their value is undefined.
    env.add_test("defined", |v: &JValue| !used_up(v));
    env.add_test("undefined", |v: &JValue| used_up(v));
    env.add_test("failed", |v: JValue| result_flag(&v, "failed"));
    env.add_test("failure", |v: JValue| result_flag(&v, "failed"));
    for n in ["succeeded", "success", "successful"] {
        env.add_test(n, |v: JValue| result_flag(&v, "failed").map(|f| !f));
    }
    env.add_test("changed", |v: JValue| result_flag(&v, "changed"));
    env.add_test("change", |v: JValue| result_flag(&v, "changed"));
    env.add_test("skipped", |v: JValue| result_flag(&v, "skipped"));
    env.add_test("skip", |v: JValue| result_flag(&v, "skipped"));
    env.add_test("unreachable", |v: JValue| result_flag(&v, "unreachable"));
    env.add_test("finished", |v: JValue| {
        if v.kind() != ValueKind::Map {
            return Err(jerr("the 'finished' test expects a dictionary"));
        }
        Ok(v.get_attr("finished")
            .map(|x| x.is_undefined() || x.is_true() || x.as_i64() == Some(1))
            .unwrap_or(true))
    });
    env.add_test(
        "match",
        |s: String, p: String, k: Kwargs| -> Result<bool, JError> {
            let re = py_regex(
                &format!("^(?:{p})"),
                k.get::<Option<_>>("ignorecase")?.unwrap_or(false),
                k.get::<Option<_>>("multiline")?.unwrap_or(false),
            )?;
            Ok(re.is_match(&s))
        },
    );
    for n in ["search", "regex"] {
        env.add_test(
            n,
            |s: String, p: String, k: Kwargs| -> Result<bool, JError> {
                let re = py_regex(
                    &p,
                    k.get::<Option<_>>("ignorecase")?.unwrap_or(false),
                    k.get::<Option<_>>("multiline")?.unwrap_or(false),
                )?;
                Ok(re.is_match(&s))
            },
        );
    }
    env.add_test("truthy", |v: JValue| v.is_true());
    env.add_test("falsy", |v: JValue| !v.is_true());
    // Python's `x in seq`: a substring of a string, a key of a dict, an
    // item of anything else.
    env.add_test(
        "contains",
        |seq: JValue, x: JValue| -> Result<bool, JError> {
            if let (Some(s), Some(sub)) = (seq.as_str(), x.as_str()) {
                return Ok(s.contains(sub));
            }
            if seq.kind() == ValueKind::Map {
                return Ok(seq.get_item(&x).is_ok_and(|v| !v.is_undefined()));
            }
            Ok(seq.try_iter()?.any(|i| i == x))
        },
    );
    add_path_tests(env);
    env.add_test("any", |seq: JValue| -> Result<bool, JError> {
        Ok(seq.try_iter()?.any(|i| i.is_true()))
    });
    env.add_test("all", |seq: JValue| -> Result<bool, JError> {
        Ok(seq.try_iter()?.all(|i| i.is_true()))
    });
    env.add_test("subset", |a: JValue, b: JValue| -> Result<bool, JError> {
        let b: Vec<JValue> = b.try_iter()?.collect();
        Ok(a.try_iter()?.all(|x| b.contains(&x)))
    });
    env.add_test("superset", |a: JValue, b: JValue| -> Result<bool, JError> {
        let a: Vec<JValue> = a.try_iter()?.collect();
        Ok(b.try_iter()?.all(|x| a.contains(&x)))
    });
    for n in ["version", "version_compare"] {
        env.add_test(n, version_test);
    }
}

/// Whether `v` is undefined; if so, why it is is forgotten (the template
/// handled it: `default`, `is defined`).
fn used_up(v: &JValue) -> bool {
    let undefined = v.is_undefined();
    if undefined {
        undefined::consumed();
    }
    undefined
}

fn default(v: &JValue, other: Option<JValue>, boolean: Option<bool>) -> JValue {
    let other = other.unwrap_or_else(|| JValue::from(""));
    if used_up(v) || (boolean == Some(true) && !v.is_true()) {
        other
    } else {
        v.clone()
    }
}

/// `mandatory(msg=None)`: ansible-core's message, naming the variable or
/// attribute that is undefined.
fn mandatory(v: &JValue, msg: Option<String>) -> Result<JValue, JError> {
    if !v.is_undefined() {
        return Ok(v.clone());
    }
    let name = undefined::consumed().and_then(|n| n.name);
    let why = msg.unwrap_or_else(|| match name {
        Some(n) => format!(
            "Mandatory variable {} not defined.",
            py_repr(&Value::String(n))
        ),
        None => "Mandatory variable not defined.".into(),
    });
    Err(super::Failure::error(format!(
        "The filter plugin 'ansible.builtin.mandatory' failed: {why}"
    )))
}

fn to_bool(v: JValue) -> bool {
    match v.kind() {
        ValueKind::Bool => v.is_true(),
        ValueKind::Number => v.as_i64() == Some(1) || v.to_string() == "1.0",
        ValueKind::String => matches!(
            v.as_str().unwrap_or("").to_lowercase().trim(),
            "yes" | "on" | "1" | "true" | "y" | "t"
        ),
        _ => false,
    }
}

fn to_int(v: JValue, default: Option<i64>, base: Option<u32>) -> i64 {
    let d = default.unwrap_or(0);
    match v.kind() {
        ValueKind::Bool => i64::from(v.is_true()),
        ValueKind::Number => v
            .as_i64()
            .or_else(|| f64::try_from(v.clone()).ok().map(|f| f.trunc() as i64))
            .unwrap_or(d),
        ValueKind::String => {
            let s = v.as_str().unwrap_or("").trim();
            let r = match base {
                Some(b) if b != 10 => i64::from_str_radix(
                    s.trim_start_matches("0x")
                        .trim_start_matches("0o")
                        .trim_start_matches("0b"),
                    b,
                )
                .ok(),
                _ => s.parse::<i64>().ok(),
            };
            r.or_else(|| s.parse::<f64>().ok().map(|f| f.trunc() as i64))
                .unwrap_or(d)
        }
        _ => d,
    }
}

fn to_float(v: JValue, default: Option<f64>) -> f64 {
    let d = default.unwrap_or(0.0);
    match v.kind() {
        ValueKind::Bool => f64::from(u8::from(v.is_true())),
        ValueKind::Number => f64::try_from(v).unwrap_or(d),
        ValueKind::String => v.as_str().unwrap_or("").trim().parse().unwrap_or(d),
        _ => d,
    }
}

fn regex_replace(
    s: String,
    pattern: String,
    replacement: Option<String>,
    k: Kwargs,
) -> Result<String, JError> {
    let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
    let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
    let count: usize = k.get::<Option<_>>("count")?.unwrap_or(0);
    let re = py_regex(&pattern, ignorecase, multiline)?;
    let rep = py_replacement(&replacement.unwrap_or_default())?;
    Ok(re.replacen(&s, count, rep.as_str()).into_owned())
}

fn regex_search(
    s: String,
    pattern: String,
    groups: Rest<String>,
    k: Kwargs,
) -> Result<JValue, JError> {
    let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
    let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
    let re = py_regex(&pattern, ignorecase, multiline)?;
    let Some(c) = re.captures(&s) else {
        return Ok(JValue::from(()));
    };
    if groups.is_empty() {
        return Ok(JValue::from(c.get(0).map_or("", |m| m.as_str())));
    }
    let mut out = Vec::new();
    for g in groups.iter() {
        // ansible-core: `\\g<name>` by name, `\\N` by number, else
        // 'Unknown argument'.
        let m = if let Some(n) = g.strip_prefix("\\g<").and_then(|n| n.split_once('>')) {
            if re.capture_names().flatten().all(|x| x != n.0) {
                return Err(jerr("no such group"));
            }
            c.name(n.0)
        } else if let Some(n) = g.strip_prefix('\\') {
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            let Ok(n) = digits.parse::<usize>() else {
                return Err(jerr("Unknown argument"));
            };
            if n >= re.captures_len() {
                return Err(jerr("no such group"));
            }
            c.get(n)
        } else {
            return Err(jerr("Unknown argument"));
        };
        out.push(m.map_or_else(|| JValue::from(()), |m| JValue::from(m.as_str())));
    }
    Ok(JValue::from(out))
}

fn regex_findall(s: String, pattern: String, k: Kwargs) -> Result<JValue, JError> {
    let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
    let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
    let re = py_regex(&pattern, ignorecase, multiline)?;
    let groups = re.captures_len() - 1;
    let mut out = Vec::new();
    for c in re.captures_iter(&s) {
        let v = match groups {
            0 => JValue::from(c.get(0).map_or("", |m| m.as_str())),
            1 => JValue::from(c.get(1).map_or("", |m| m.as_str())),
            _ => JValue::from(
                (1..=groups)
                    .map(|i| c.get(i).map_or("", |m| m.as_str()).to_owned())
                    .collect::<Vec<_>>(),
            ),
        };
        out.push(v);
    }
    Ok(JValue::from(out))
}

/// Jinja2's `urlencode`: a string (or anything not iterable) quoted with
/// `/` kept; a dict, or a sequence of `(key, value)` pairs, as a query
/// string (`/` quoted, spaces as `+`).
fn urlencode(v: JValue) -> Result<String, JError> {
    fn quote(v: &JValue, for_qs: bool) -> String {
        let s = match v.as_str() {
            Some(s) => s.to_owned(),
            None => crate::pycompat::py_str(&jv_to_json(v)),
        };
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                    out.push(b as char)
                }
                b'/' if !for_qs => out.push('/'),
                b' ' if for_qs => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    let pairs: Vec<(JValue, JValue)> = match v.kind() {
        ValueKind::Map => v
            .try_iter()?
            .map(|k| {
                let x = v.get_item(&k).unwrap_or_default();
                (k, x)
            })
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => v
            .try_iter()?
            .map(
                |p| match (p.len(), p.get_item_by_index(0), p.get_item_by_index(1)) {
                    (Some(2), Ok(k), Ok(x)) => Ok((k, x)),
                    _ => Err(jerr(format!(
                        "cannot unpack {} into a (key, value) pair",
                        py_repr(&jv_to_json(&p))
                    ))),
                },
            )
            .collect::<Result<_, _>>()?,
        _ => return Ok(quote(&v, false)),
    };
    Ok(pairs
        .iter()
        .map(|(k, x)| format!("{}={}", quote(k, true), quote(x, true)))
        .collect::<Vec<_>>()
        .join("&"))
}

fn ternary(v: JValue, t: JValue, f: JValue, none: Option<JValue>) -> JValue {
    if let (true, Some(n)) = (v.is_none(), none) {
        return n;
    }
    if v.is_true() { t } else { f }
}

fn merge(a: &mut Value, b: Value, recursive: bool, list_merge: &str) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) if recursive && x.is_object() && v.is_object() => {
                        merge(x, v, recursive, list_merge);
                    }
                    Some(Value::Array(x)) if v.is_array() && list_merge != "replace" => {
                        let Value::Array(v) = v else { continue };
                        match list_merge {
                            "append" => x.extend(v),
                            "prepend" => {
                                let old = std::mem::take(x);
                                *x = v;
                                x.extend(old);
                            }
                            "append_rp" => {
                                x.retain(|i| !v.contains(i));
                                x.extend(v);
                            }
                            "prepend_rp" => {
                                let old: Vec<Value> = std::mem::take(x)
                                    .into_iter()
                                    .filter(|i| !v.contains(i))
                                    .collect();
                                *x = v;
                                x.extend(old);
                            }
                            // keep
                            _ => {}
                        }
                    }
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

fn combine(v: JValue, rest: Rest<JValue>, k: Kwargs) -> Result<JValue, JError> {
    let recursive: bool = k.get::<Option<_>>("recursive")?.unwrap_or(false);
    let list_merge: String = k
        .get::<Option<String>>("list_merge")?
        .unwrap_or_else(|| "replace".into());
    k.assert_all_used()
        .map_err(|_| jerr("'recursive' and 'list_merge' are the only valid keyword arguments"))?;
    if !matches!(
        list_merge.as_str(),
        "replace" | "keep" | "append" | "prepend" | "append_rp" | "prepend_rp"
    ) {
        return Err(jerr(
            "merge_hash: 'list_merge' argument can only be equal to 'replace', 'keep', 'append', 'prepend', 'append_rp' or 'prepend_rp'",
        ));
    }
    let mut acc = jv_to_json(&v);
    let mut others = Vec::new();
    for r in rest.iter() {
        if r.kind() == ValueKind::Seq {
            others.extend(r.try_iter()?);
        } else {
            others.push(r.clone());
        }
    }
    if acc.is_array() {
        let items = std::mem::take(&mut acc);
        acc = Value::Object(Map::new());
        if let Value::Array(items) = items {
            for i in items {
                merge(&mut acc, i, recursive, &list_merge);
            }
        }
    }
    if !acc.is_object() {
        return Err(jerr("combine: the value must be a dictionary"));
    }
    for o in others {
        let o = jv_to_json(&o);
        if !o.is_object() {
            return Err(jerr("combine: every argument must be a dictionary"));
        }
        merge(&mut acc, o, recursive, &list_merge);
    }
    Ok(undefined::to_value(&acc))
}

/// `key_name=` and `value_name=` (`dict2items`, `items2dict`).
fn key_value_names(k: &Kwargs) -> Result<(String, String), JError> {
    let name = |opt: &str, default: &str| -> Result<String, JError> {
        Ok(k.get::<Option<String>>(opt)?
            .unwrap_or_else(|| default.to_owned()))
    };
    Ok((name("key_name", "key")?, name("value_name", "value")?))
}

fn dict2items(v: JValue, k: Kwargs) -> Result<JValue, JError> {
    let (kn, vn) = key_value_names(&k)?;
    let Value::Object(m) = jv_to_json(&v) else {
        return Err(jerr("dict2items requires a dictionary"));
    };
    let out: Vec<Value> = m
        .into_iter()
        .map(|(key, val)| {
            let mut o = Map::new();
            o.insert(kn.clone(), Value::String(key));
            o.insert(vn.clone(), val);
            Value::Object(o)
        })
        .collect();
    Ok(undefined::to_value(&Value::Array(out)))
}

fn items2dict(v: JValue, k: Kwargs) -> Result<JValue, JError> {
    let (kn, vn) = key_value_names(&k)?;
    let Value::Array(items) = jv_to_json(&v) else {
        return Err(jerr("items2dict requires a list"));
    };
    let mut out = Map::new();
    for i in items {
        let key = i
            .get(&kn)
            .ok_or_else(|| jerr(format!("items2dict: an item has no '{kn}'")))?;
        let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
        out.insert(key, i.get(&vn).cloned().unwrap_or(Value::Null));
    }
    Ok(undefined::to_value(&Value::Object(out)))
}

fn unique_list(v: &JValue) -> Result<Vec<JValue>, JError> {
    let mut out: Vec<JValue> = Vec::new();
    for x in v.try_iter()? {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(out)
}

fn flatten(v: &JValue, levels: Option<usize>, out: &mut Vec<JValue>) -> Result<(), JError> {
    for x in v.try_iter()? {
        if x.kind() == ValueKind::Seq && levels != Some(0) {
            flatten(&x, levels.map(|l| l - 1), out)?;
        } else if !x.is_none() {
            out.push(x);
        }
    }
    Ok(())
}

fn version_test(a: String, b: String, op: Option<String>) -> Result<bool, JError> {
    let parse = |s: &str| -> Vec<u64> {
        s.split(['.', '-', '_'])
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    let (x, y) = (parse(&a), parse(&b));
    let n = x.len().max(y.len());
    let pad = |mut v: Vec<u64>| {
        v.resize(n, 0);
        v
    };
    let ord = pad(x).cmp(&pad(y));
    use std::cmp::Ordering::*;
    Ok(match op.as_deref().unwrap_or("eq") {
        "eq" | "==" | "=" => ord == Equal,
        "ne" | "!=" | "<>" => ord != Equal,
        "lt" | "<" => ord == Less,
        "le" | "<=" => ord != Greater,
        "gt" | ">" => ord == Greater,
        "ge" | ">=" => ord != Less,
        o => return Err(jerr(format!("version: unknown operator {o:?}"))),
    })
}

/// Keys sorted at every level (`sort_keys=True`).
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut items: Vec<(String, Value)> = o.into_iter().collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(items.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        v => v,
    }
}

/// ansible-core's path tests (`ansible.builtin.file` ...: run on the
/// controller, as there).
fn add_path_tests(env: &mut Environment<'static>) {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    let meta = |p: &str| std::fs::metadata(p).ok();
    for n in ["abs", "is_abs"] {
        env.add_test(n, |p: String| Path::new(&p).is_absolute());
    }
    for n in ["directory", "is_dir"] {
        env.add_test(n, |p: String| Path::new(&p).is_dir());
    }
    for n in ["file", "is_file"] {
        env.add_test(n, |p: String| Path::new(&p).is_file());
    }
    for n in ["link", "is_link"] {
        env.add_test(n, |p: String| Path::new(&p).is_symlink());
    }
    env.add_test("exists", |p: String| Path::new(&p).exists());
    env.add_test("link_exists", |p: String| {
        std::fs::symlink_metadata(&p).is_ok()
    });
    for n in ["mount", "is_mount"] {
        // os.path.ismount: another device than the parent's, or the same
        // inode as the parent (`/`).
        env.add_test(n, move |p: String| {
            let parent = format!("{}/..", p.trim_end_matches('/'));
            match (std::fs::symlink_metadata(&p).ok(), meta(&parent)) {
                (Some(a), Some(b)) if !a.file_type().is_symlink() => {
                    a.dev() != b.dev() || a.ino() == b.ino()
                }
                _ => false,
            }
        });
    }
    for n in ["same_file", "is_same_file"] {
        env.add_test(n, move |a: String, b: String| match (meta(&a), meta(&b)) {
            (Some(x), Some(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        });
    }
}
