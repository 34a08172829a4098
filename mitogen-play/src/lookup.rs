//! Lookup plugins: `lookup()`, `query()`/`q()` and the `with_<lookup>`
//! loops, run on the controller as ansible-core 2.19's builtin plugins
//! (`plugins/lookup/*.py`) and its `_invoke_lookup` run them:
//!
//! - `lookup()` returns one value: nothing → `[]`, one result → that
//!   result, several strings → joined with `,`, else the list; `query()`,
//!   `q()` and `wantlist=True` return the list.
//! - `errors='strict'` (the default) fails the template with
//!   `The lookup plugin 'NAME' failed: ...`; `'warn'` adds the error to the
//!   task's warnings and `'ignore'` drops it, both returning `None` (`[]`
//!   with `wantlist`).
//! - A top-level argument that is undefined is the result (the plugin is
//!   not run), except for `env` and `first_found`, as ansible-core's
//!   `accept_args_markers`.
//! - Files are searched as `find_file_in_search_path` does: for each
//!   entry of `ansible_search_path` (the role's directory, the task file's
//!   directory, the playbook's), `DIR/<subdir>/name` then `DIR/name`, then
//!   the playbook directory; `<subdir>` is `files` (`file`, `fileglob`),
//!   `templates` (`template`), and for `first_found` none — except under
//!   `with_first_found`, where the task's action picks `templates`, `vars`
//!   or `files`.
//!
//! Other lookups (ansible-core's that are not here, a collection's, a
//! playbook's or role's `lookup_plugins/`) run in the plugin host
//! ([`crate::plugins`]) with the task's variables; names neither knows are
//! refused before the run (the templates' static check and the
//! `with_<lookup>` keywords), with their file:line.

use super::template::{Templar, Vars, truthy};
use minijinja::value::Value as JValue;
use mitogen_ansible::jinja::{Syntax, undefined};
use mitogen_ansible::pycompat::{py_repr, py_str, py_type_name};
use regex::Regex;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

/// The lookup plugins there are (also as `ansible.builtin.<name>`).
pub const LOOKUPS: &[&str] = &[
    "env",
    "file",
    "template",
    "pipe",
    "vars",
    "items",
    "list",
    "dict",
    "indexed_items",
    "together",
    "nested",
    "sequence",
    "subelements",
    "fileglob",
    "first_found",
    "lines",
    "unvault",
];

/// Whether `name` is a lookup plugin here.
pub fn exists(name: &str) -> bool {
    LOOKUPS.contains(&short(name))
}

fn short(name: &str) -> &str {
    name.strip_prefix("ansible.builtin.")
        .or_else(|| name.strip_prefix("ansible.legacy."))
        .unwrap_or(name)
}

/// What a plugin runs with.
pub(crate) struct Ctx<'a> {
    /// The engine (`template`, `vars`).
    pub(crate) templar: &'a Templar,
    /// The task's variables (`ansible_search_path`, `role_path`,
    /// `playbook_dir`; `vars`).
    pub(crate) vars: &'a Vars,
    /// Templating depth so far (a variable that looks itself up ends).
    pub(crate) depth: usize,
    /// The task's action, when run as `with_<lookup>`.
    pub(crate) with_action: Option<&'a str>,
}

/// A plugin's exception chain, outermost first, shown as ansible-core
/// shows chained errors: `outer: inner.` (inner periods dropped).
#[derive(Debug)]
pub(crate) struct Failure(Vec<String>);

impl Failure {
    fn new(msg: impl Into<String>) -> Self {
        Self(vec![msg.into()])
    }

    fn caused(outer: impl Into<String>, inner: impl Into<String>) -> Self {
        Self(vec![outer.into(), inner.into()])
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        for (i, m) in self.0.iter().enumerate() {
            if i + 1 < n {
                write!(f, "{}: ", m.trim_end_matches('.'))?;
            } else {
                f.write_str(m)?;
            }
        }
        Ok(())
    }
}

fn quoted(s: &str) -> String {
    py_repr(&Value::String(s.to_owned()))
}

fn failed(name: &str, f: &Failure) -> String {
    format!("The lookup plugin {} failed: {f}", quoted(name))
}

/// `lookup(name, *terms, **kwargs)` (`force_list`: `query`/`q`).
///
/// # Errors
/// The plugin's failure under `errors='strict'`, or an unknown plugin.
pub(crate) fn invoke(
    name: &str,
    terms: &[JValue],
    kwargs: Vec<(String, JValue)>,
    force_list: bool,
    cx: &Ctx<'_>,
) -> Result<JValue, String> {
    let plugin = short(name);
    if !LOOKUPS.contains(&plugin) && !hosted(name, cx) {
        return Err(format!("The lookup plugin {} was not found.", quoted(name)));
    }
    if !matches!(plugin, "env" | "first_found") {
        let undefined = terms
            .iter()
            .chain(kwargs.iter().map(|(_, v)| v))
            .find(|v| v.is_undefined());
        if let Some(u) = undefined {
            return Ok(u.clone());
        }
    }
    let mut wantlist = force_list;
    let mut errors = String::from("strict");
    let mut kw = Map::new();
    for (k, v) in kwargs {
        match k.as_str() {
            "wantlist" => wantlist = force_list || v.is_true(),
            "errors" => errors = v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            _ => {
                kw.insert(k, to_json(&v));
            }
        }
    }
    let terms: Vec<Value> = terms.iter().map(to_json).collect();
    let list = match run(plugin, &terms, &kw, cx) {
        Ok(l) => l,
        Err(f) => {
            match errors.as_str() {
                "warn" => cx.vars.warn(format!(
                    "An error occurred while running the lookup plugin {}: {f}",
                    quoted(name)
                )),
                "ignore" => {}
                _ => return Err(failed(name, &f)),
            }
            return Ok(if wantlist {
                JValue::from(Vec::<JValue>::new())
            } else {
                JValue::from(())
            });
        }
    };
    if wantlist || list.is_empty() {
        return Ok(JValue::from(list));
    }
    if list.len() == 1 {
        return Ok(list.into_iter().next().unwrap_or_default());
    }
    if list.iter().all(|v| v.as_str().is_some()) {
        let parts: Vec<&str> = list.iter().filter_map(JValue::as_str).collect();
        return Ok(JValue::from(parts.join(",")));
    }
    Ok(JValue::from(list))
}

/// `with_<name>: terms` (`terms` templated): the loop's items.
///
/// # Errors
/// The plugin's failure, as ansible-core reports it for a loop.
pub(crate) fn run_with(name: &str, terms: Value, cx: &Ctx<'_>) -> Result<Vec<Value>, String> {
    let terms = match terms {
        Value::Array(a) => a,
        other => vec![other],
    };
    let items = run(short(name), &terms, &Map::new(), cx).map_err(|f| failed(name, &f))?;
    items
        .iter()
        .map(|v| {
            if v.is_undefined() {
                Err(undefined::consumed().map(|n| n.msg).unwrap_or_else(|| {
                    format!("the lookup plugin '{name}' returned an undefined value")
                }))
            } else {
                Ok(to_json(v))
            }
        })
        .collect()
}

fn to_json(v: &JValue) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn values(v: Vec<Value>) -> Vec<JValue> {
    v.iter().map(undefined::to_value).collect()
}

/// Native lookups without side effects or templating of their own: when
/// one fails, ansible-core's own (in the plugin host) answers instead, so a
/// bad argument fails with ansible-core's words (and an input the native
/// one misjudged still works).
/// (Not the ones that search files: the host's lookups run outside
/// ansible-core's task context, which `find_file_in_search_path` needs.)
const CHECKED_BY_HOST: &[&str] = &[
    "env",
    "items",
    "list",
    "dict",
    "indexed_items",
    "together",
    "nested",
    "sequence",
    "subelements",
];

/// Lookup `plugin`: the native one, else (or when a checked one fails)
/// ansible-core's through the plugin host.
fn run(
    plugin: &str,
    terms: &[Value],
    kw: &Map<String, Value>,
    cx: &Ctx<'_>,
) -> Result<Vec<JValue>, Failure> {
    match run_native(plugin, terms, kw, cx) {
        Err(e) if CHECKED_BY_HOST.contains(&plugin) => match cx.templar.plugins() {
            Some(host) if host.has(crate::plugins::Kind::Lookup, plugin) => {
                in_host(host, plugin, terms, kw, cx)
            }
            _ => Err(e),
        },
        r => r,
    }
}

/// Lookup `plugin` run by ansible-core in the plugin host, with the
/// task's variables and base directory.
fn in_host(
    host: &crate::plugins::PluginHost,
    plugin: &str,
    terms: &[Value],
    kw: &Map<String, Value>,
    cx: &Ctx<'_>,
) -> Result<Vec<JValue>, Failure> {
    host.lookup(
        plugin,
        terms.to_vec(),
        kw.clone(),
        cx.vars.flatten(),
        &basedir(cx.vars),
    )
    .map(values)
    .map_err(|e| Failure::new(e.to_string()))
}

fn run_native(
    plugin: &str,
    terms: &[Value],
    kw: &Map<String, Value>,
    cx: &Ctx<'_>,
) -> Result<Vec<JValue>, Failure> {
    Ok(match plugin {
        "vars" => return vars(terms, kw, cx),
        "template" => return template(terms, kw, cx),
        "env" => values(env(terms, kw)?),
        "file" => values(file(terms, kw, cx)?),
        "unvault" => values(unvault(terms, cx)?),
        "pipe" => values(shell(terms, cx, false)?),
        "lines" => values(shell(terms, cx, true)?),
        "items" => values(flatten(terms)),
        "list" => values(terms.to_vec()),
        "dict" => values(dict(terms)?),
        "indexed_items" => values(
            flatten(terms)
                .into_iter()
                .enumerate()
                .map(|(i, x)| json!([i, x]))
                .collect(),
        ),
        "together" => values(together(terms)?),
        "nested" => values(nested(terms)?),
        "sequence" => values(sequence(terms, kw)?),
        "subelements" => values(subelements(terms)?),
        "fileglob" => values(fileglob(terms, cx)?),
        "first_found" => values(first_found(terms, kw, cx)?),
        other => match cx.templar.plugins() {
            Some(host) if hosted(other, cx) => in_host(host, other, terms, kw, cx)?,
            _ => return Err(Failure::new(format!("no lookup plugin '{other}'"))),
        },
    })
}

/// Whether the plugin host serves lookup `name`.
fn hosted(name: &str, cx: &Ctx<'_>) -> bool {
    served(name, cx.templar)
}

/// Whether `templar` can run lookup `name`: natively or in its plugin
/// host.
pub(crate) fn served(name: &str, templar: &Templar) -> bool {
    exists(name)
        || templar
            .plugins()
            .is_some_and(|h| h.has(crate::plugins::Kind::Lookup, name))
}

/// Python's `str(x)` of a term.
fn term_str(v: &Value) -> String {
    py_str(v)
}

/// ansible-core's `boolean(value, strict=False)` for a plugin option.
fn bool_opt(kw: &Map<String, Value>, key: &str, default: bool) -> bool {
    match kw.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => matches!(
            s.to_lowercase().trim(),
            "yes" | "on" | "1" | "true" | "y" | "t" | "1.0"
        ),
        Some(v) => truthy(v),
    }
}

/// `LookupBase._flatten`: one level of lists opened.
fn flatten(terms: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for t in terms {
        match t {
            Value::Array(a) => out.extend(a.iter().cloned()),
            other => out.push(other.clone()),
        }
    }
    out
}

/// Python's `iter(x)` over a JSON value.
fn py_iter(v: &Value) -> Result<Vec<Value>, Failure> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::String(s) => Ok(s.chars().map(|c| Value::String(c.to_string())).collect()),
        Value::Object(o) => Ok(o.keys().map(|k| Value::String(k.clone())).collect()),
        other => Err(Failure::new(format!(
            "'{}' object is not iterable",
            py_type_name(other)
        ))),
    }
}

fn env(terms: &[Value], kw: &Map<String, Value>) -> Result<Vec<Value>, Failure> {
    let default = kw.get("default").cloned().unwrap_or_else(|| "".into());
    let mut out = Vec::new();
    for t in terms {
        let t = term_str(t);
        let Some(var) = t.split_whitespace().next() else {
            return Err(Failure::new("list index out of range"));
        };
        out.push(match std::env::var_os(var) {
            Some(v) => Value::String(v.to_string_lossy().into_owned()),
            None => default.clone(),
        });
    }
    Ok(out)
}

fn file(terms: &[Value], kw: &Map<String, Value>, cx: &Ctx<'_>) -> Result<Vec<Value>, Failure> {
    let (lstrip, rstrip) = (bool_opt(kw, "lstrip", false), bool_opt(kw, "rstrip", true));
    let mut out = Vec::new();
    for t in terms {
        let t = term_str(t);
        let outer = format!("Unable to access the file {}.", quoted(&t));
        let Some(p) = find_file(cx.vars, Some("files"), &t, true) else {
            return Err(Failure::caused(
                outer,
                "File not found. Use -vvvvv to see paths searched.",
            ));
        };
        let bytes = read_file(&p).map_err(|e| Failure::caused(outer, e))?;
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if lstrip {
            s = s.trim_start().to_owned();
        }
        if rstrip {
            s = s.trim_end().to_owned();
        }
        out.push(Value::String(s));
    }
    Ok(out)
}

/// A file's content, decrypted if it is a vault (the loader's
/// `get_text_file_contents`).
fn read_file(p: &str) -> Result<Vec<u8>, String> {
    let data = std::fs::read(p).map_err(|e| e.to_string())?;
    mitogen_ansible::vault::decrypt_if_vault(data).map_err(|e| e.0)
}

/// `unvault`: a file's content, decrypted if it is a vault (not stripped).
fn unvault(terms: &[Value], cx: &Ctx<'_>) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    for t in terms {
        let t = term_str(t);
        let Some(p) = find_file(cx.vars, Some("files"), &t, false) else {
            return Err(Failure::new(format!(
                "Unable to find file matching \"{t}\" "
            )));
        };
        let bytes = read_file(&p).map_err(Failure::new)?;
        out.push(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(out)
}

fn template(
    terms: &[Value],
    kw: &Map<String, Value>,
    cx: &Ctx<'_>,
) -> Result<Vec<JValue>, Failure> {
    let opt = |k: &str, d: &str| -> String {
        kw.get(k)
            .filter(|v| !v.is_null())
            .map_or_else(|| d.to_owned(), py_str)
    };
    let syntax = Syntax {
        variable: (
            opt("variable_start_string", "{{"),
            opt("variable_end_string", "}}"),
        ),
        comment: (
            opt("comment_start_string", "{#"),
            opt("comment_end_string", "#}"),
        ),
        ..Syntax::default()
    };
    let trim_blocks = bool_opt(kw, "trim_blocks", true);
    let env = if syntax != Syntax::default() || !trim_blocks {
        Some(
            cx.templar
                .with_options(&syntax, trim_blocks)
                .map_err(|e| Failure::new(e.0))?,
        )
    } else {
        None
    };
    let extra = match kw.get("template_vars") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => {
            return Err(Failure::new(format!(
                "Invalid type for configuration option template_vars: {} is not a dict",
                py_str(other)
            )));
        }
    };
    let mut out = Vec::new();
    for t in terms {
        let t = term_str(t);
        let Some(p) = find_file(cx.vars, Some("templates"), &t, false) else {
            return Err(Failure::new(format!(
                "the template file {t} could not be found for the lookup"
            )));
        };
        let bytes = read_file(&p).map_err(Failure::new)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut vars = cx.vars.clone();
        let managed = cx.vars.get("ansible_managed").is_none();
        vars.push(std::sync::Arc::new(mitogen_ansible::template_vars(
            &t,
            Path::new(&p),
            None,
            managed,
        )));
        vars.push(std::sync::Arc::new(extra.clone()));
        let r = cx.templar.render_text(
            env.as_ref().map(|e| (e, syntax.plain_variables())),
            &text,
            &vars,
            cx.depth,
        );
        out.push(match r {
            Ok(v) => undefined::to_value(&v),
            // An undefined value in the template is the lookup's value
            // (ansible-core's marker), not the plugin's failure.
            Err(f) if f.undefined => {
                undefined::note(f.msg);
                JValue::UNDEFINED
            }
            Err(f) => return Err(Failure::new(f.msg)),
        });
    }
    Ok(out)
}

fn vars(terms: &[Value], kw: &Map<String, Value>, cx: &Ctx<'_>) -> Result<Vec<JValue>, Failure> {
    let default = kw.get("default").filter(|v| !v.is_null());
    let scope = cx.templar.lazy_at(cx.vars.clone(), cx.depth);
    let mut out = Vec::new();
    for t in terms {
        let Value::String(name) = t else {
            return Err(Failure::new(format!(
                "Variable name must be 'str' not {}.",
                quoted(py_type_name(t))
            )));
        };
        let v = scope
            .get_item(&JValue::from(name.as_str()))
            .unwrap_or(JValue::UNDEFINED);
        out.push(if !v.is_undefined() {
            v
        } else if let Some(d) = default {
            undefined::to_value(d)
        } else {
            undefined::note(format!("No variable named {} was found.", quoted(name)));
            JValue::UNDEFINED
        });
    }
    Ok(out)
}

/// `pipe` (`lines`: every output line a result), in the playbook's
/// directory, with `/bin/sh` as Python's `shell=True`.
fn shell(terms: &[Value], cx: &Ctx<'_>, lines: bool) -> Result<Vec<Value>, Failure> {
    let dir = basedir(cx.vars);
    let mut out = Vec::new();
    for t in terms {
        let t = term_str(t);
        let r = Command::new("/bin/sh")
            .arg("-c")
            .arg(&t)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Failure::new(format!("{e}")))?;
        let rc = r.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            -r.status.signal().unwrap_or(0)
        });
        if rc != 0 {
            let which = if lines { "lines" } else { "pipe" };
            return Err(Failure::new(format!(
                "lookup_plugin.{which}({t}) returned {rc}"
            )));
        }
        let text = String::from_utf8_lossy(&r.stdout);
        if lines {
            out.extend(
                mitogen_ansible::pycompat::splitlines(&text)
                    .into_iter()
                    .map(|l| Value::String(l.to_owned())),
            );
        } else {
            out.push(Value::String(text.trim_end().to_owned()));
        }
    }
    Ok(out)
}

fn dict(terms: &[Value]) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    for t in terms {
        let Value::Object(o) = t else {
            return Err(Failure::new(format!(
                "the 'dict' lookup plugin expects a dictionary, got '{}' of type <class '{}'>)",
                py_str(t),
                py_type_name(t)
            )));
        };
        out.extend(o.iter().map(|(k, v)| json!({"key": k, "value": v})));
    }
    Ok(out)
}

fn together(terms: &[Value]) -> Result<Vec<Value>, Failure> {
    if terms.is_empty() {
        return Err(Failure::new(
            "with_together requires at least one element in each list",
        ));
    }
    let lists = terms.iter().map(py_iter).collect::<Result<Vec<_>, _>>()?;
    let n = lists.iter().map(Vec::len).max().unwrap_or(0);
    Ok((0..n)
        .map(|i| {
            let row: Vec<Value> = lists
                .iter()
                .map(|l| l.get(i).cloned().unwrap_or(Value::Null))
                .collect();
            Value::Array(flatten(&row))
        })
        .collect())
}

fn nested(terms: &[Value]) -> Result<Vec<Value>, Failure> {
    let Some((first, rest)) = terms.split_first() else {
        return Err(Failure::new(
            "with_nested requires at least one element in the nested list",
        ));
    };
    let mut result = py_iter(first)?;
    for next in rest {
        let b = py_iter(next)?;
        let mut combined = Vec::new();
        for x in &result {
            for y in &b {
                combined.push(Value::Array(flatten(&[x.clone(), y.clone()])));
            }
        }
        result = combined;
    }
    // Each combination's own lists opened once more (`_flatten(x)`).
    result
        .iter()
        .map(|x| Ok(Value::Array(flatten(&py_iter(x)?))))
        .collect()
}

const SEQ_FIELDS: &[&str] = &["start", "end", "stride", "count", "format"];

static SEQ_SHORTCUT: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"(?i)^((0?x?[0-9a-f]+)-)?(0?x?[0-9a-f]+)(/(0?x?[0-9a-f]+))?(:(.+))?$")
        .expect("static regex")
});

/// ansible-core's `ensure_type(value, 'integer')`.
fn seq_int(key: &str, v: &Value) -> Result<i64, Failure> {
    let bad = || {
        Failure::new(format!(
            "Config '{key}' for 'sequence' lookup plugin from 'Direct' has an invalid value: Invalid value provided for 'integer': {}",
            py_repr(v)
        ))
    };
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(bad),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(i);
            }
            let decimal = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
            match t.parse::<f64>() {
                Ok(f) if decimal && f.is_finite() && f.fract() == 0.0 => Ok(f as i64),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn sequence(terms: &[Value], kw: &Map<String, Value>) -> Result<Vec<Value>, Failure> {
    let empty = [Value::String(String::new())];
    let terms = if !kw.is_empty() && terms.is_empty() {
        &empty[..]
    } else {
        terms
    };
    let mut out = Vec::new();
    for term in terms {
        let mut o: Map<String, Value> = Map::new();
        o.insert("start".into(), 1.into());
        o.insert("stride".into(), 1.into());
        o.insert("format".into(), "%d".into());
        for (k, v) in kw {
            if SEQ_FIELDS.contains(&k.as_str()) && !v.is_null() {
                o.insert(k.clone(), v.clone());
            }
        }
        let term = term_str(term);
        if let Some(c) = SEQ_SHORTCUT.captures(&term) {
            for (key, group) in [("start", 2), ("end", 3), ("stride", 5), ("format", 7)] {
                if let Some(m) = c.get(group) {
                    o.insert(key.into(), m.as_str().into());
                }
            }
        } else {
            let Ok(mut args) = super::util::parse_kv(&term, false) else {
                return Err(Failure::new(
                    "unrecognized arguments to with_sequence: ['_raw_params']",
                ));
            };
            for f in SEQ_FIELDS {
                if let Some(v) = args.shift_remove(*f) {
                    o.insert((*f).into(), v);
                }
            }
            if !args.is_empty() {
                let keys: Vec<Value> = args.keys().map(|k| Value::String(k.clone())).collect();
                return Err(Failure::new(format!(
                    "unrecognized arguments to with_sequence: {}",
                    py_repr(&Value::Array(keys))
                )));
            }
        }
        let int = |k: &str| o.get(k).map(|v| seq_int(k, v)).transpose();
        let start = int("start")?.unwrap_or(1);
        let mut end = int("end")?;
        let count = int("count")?;
        let stride = int("stride")?.unwrap_or(1);
        let format = o.get("format").map_or_else(|| "%d".into(), py_str);
        // Python's ints do not overflow: i128 holds every i64 sum here.
        let (start, stride) = (i128::from(start), i128::from(stride));
        let end = match (count, end.take()) {
            (None, None) => return Err(Failure::new("must specify count or end in with_sequence")),
            (Some(_), Some(_)) => {
                return Err(Failure::new(
                    "can't specify both count and end in with_sequence",
                ));
            }
            (Some(0), None) => continue,
            (Some(c), None) => start + i128::from(c) * stride - 1,
            (None, Some(e)) => i128::from(e),
        };
        if stride > 0 && end < start {
            return Err(Failure::new("to count backwards make stride negative"));
        }
        if stride < 0 && end > start {
            return Err(Failure::new("to count forward don't make stride negative"));
        }
        if stride == 0 {
            continue;
        }
        if format.matches('%').count() != 1 {
            return Err(Failure::new(format!("bad formatting string: {format}")));
        }
        let mut i = start;
        let stop = if stride > 0 { end + 1 } else { end - 1 };
        while (stride > 0 && i < stop) || (stride < 0 && i > stop) {
            let s = i64::try_from(i)
                .ok()
                .and_then(|n| py_format_int(&format, n))
                .ok_or_else(|| {
                    Failure::new(format!("problem formatting {i} with {}", quoted(&format)))
                })?;
            out.push(Value::String(s));
            i += stride;
        }
    }
    Ok(out)
}

/// Python's `fmt % n` for a format with one `%` conversion; `None` where
/// Python raises (an unknown conversion, `*`, a mapping key).
pub(crate) fn py_format_int(fmt: &str, n: i64) -> Option<String> {
    let pos = fmt.find('%')?;
    let (pre, spec) = (&fmt[..pos], &fmt[pos + 1..]);
    let mut chars = spec.char_indices().peekable();
    let (mut left, mut plus, mut space, mut zero, mut alt) = (false, false, false, false, false);
    while let Some(&(_, c)) = chars.peek() {
        match c {
            '-' => left = true,
            '+' => plus = true,
            ' ' => space = true,
            '0' => zero = true,
            '#' => alt = true,
            _ => break,
        }
        chars.next();
    }
    let num = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        let mut v: Option<usize> = None;
        while let Some(&(_, c)) = chars.peek() {
            let Some(d) = c.to_digit(10) else { break };
            v = Some(v.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
            chars.next();
        }
        v
    };
    let width = num(&mut chars).unwrap_or(0);
    // A field wider than any sane one is refused, not allocated.
    const MAX_FIELD: usize = 1 << 20;
    let mut precision = None;
    if let Some(&(_, '.')) = chars.peek() {
        chars.next();
        precision = Some(num(&mut chars).unwrap_or(0));
    }
    if width > MAX_FIELD || precision.is_some_and(|p| p > MAX_FIELD) {
        return None;
    }
    while let Some(&(_, c)) = chars.peek() {
        if !matches!(c, 'h' | 'l' | 'L') {
            break;
        }
        chars.next();
    }
    let (at, conv) = chars.next()?;
    let rest = &spec[at + conv.len_utf8()..];
    let neg = n < 0;
    let mag = n.unsigned_abs();
    let f = n as f64;
    let (mut prefix, body, numeric) = match conv {
        'd' | 'i' | 'u' => (String::new(), mag.to_string(), true),
        'o' => (
            if alt { "0o".into() } else { String::new() },
            format!("{mag:o}"),
            true,
        ),
        'x' => (
            if alt { "0x".into() } else { String::new() },
            format!("{mag:x}"),
            true,
        ),
        'X' => (
            if alt { "0X".into() } else { String::new() },
            format!("{mag:X}"),
            true,
        ),
        'f' | 'F' => (
            String::new(),
            format!("{:.*}", precision.unwrap_or(6), f.abs()),
            true,
        ),
        'e' | 'E' => {
            let s = py_exp(f.abs(), precision.unwrap_or(6));
            (
                String::new(),
                if conv == 'E' { s.to_uppercase() } else { s },
                true,
            )
        }
        'g' | 'G' => {
            let s = py_general(f.abs(), precision.unwrap_or(6), alt);
            (
                String::new(),
                if conv == 'G' { s.to_uppercase() } else { s },
                true,
            )
        }
        'c' => (
            String::new(),
            char::from_u32(u32::try_from(n).ok()?)?.to_string(),
            false,
        ),
        's' | 'r' | 'a' => {
            let s = n.to_string();
            let s = match precision {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            };
            (String::new(), s, false)
        }
        _ => return None,
    };
    let mut body = body;
    if numeric && matches!(conv, 'd' | 'i' | 'u' | 'o' | 'x' | 'X') {
        if let Some(p) = precision {
            if body.len() < p {
                body = format!("{}{body}", "0".repeat(p - body.len()));
            }
        }
    }
    if numeric {
        let sign = if neg {
            "-"
        } else if plus {
            "+"
        } else if space {
            " "
        } else {
            ""
        };
        prefix = format!("{sign}{prefix}");
    }
    let len = prefix.chars().count() + body.chars().count();
    let field = if len >= width {
        format!("{prefix}{body}")
    } else if left {
        format!("{prefix}{body}{}", " ".repeat(width - len))
    } else if zero && numeric {
        format!("{prefix}{}{body}", "0".repeat(width - len))
    } else {
        format!("{}{prefix}{body}", " ".repeat(width - len))
    };
    Some(format!("{pre}{field}{rest}"))
}

/// Python's `%e`: `1.500000e+01`.
fn py_exp(f: f64, precision: usize) -> String {
    let s = format!("{f:.precision$e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Python's `%g`.
fn py_general(f: f64, precision: usize, alt: bool) -> String {
    let p = precision.max(1);
    if f == 0.0 {
        return if alt {
            format!("{:.*}", p - 1, 0.0)
        } else {
            "0".into()
        };
    }
    let x = f.abs().log10().floor() as i64;
    let s = if x >= -4 && x < p as i64 {
        format!("{:.*}", (p as i64 - 1 - x).max(0) as usize, f)
    } else {
        py_exp(f, p - 1)
    };
    if alt {
        return s;
    }
    let (m, e) = match s.split_once('e') {
        Some((m, e)) => (m.to_owned(), format!("e{e}")),
        None => (s.clone(), String::new()),
    };
    let m = if m.contains('.') {
        m.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        m
    };
    format!("{m}{e}")
}

fn subelements(terms: &[Value]) -> Result<Vec<Value>, Failure> {
    let terms_error = |msg: &str| {
        Failure::new(format!(
            "subelements lookup expects a list of two or three items, {msg}"
        ))
    };
    if !(2..=3).contains(&terms.len()) {
        return Err(terms_error(""));
    }
    let Some(path) = terms[1].as_str() else {
        return Err(terms_error(
            "first a dict or a list, second a string pointing to the subkey",
        ));
    };
    let elements: Vec<Value> = match &terms[0] {
        Value::Array(a) => a.clone(),
        Value::Object(o) => {
            if o.get("skipped").is_some_and(|s| s != &Value::Bool(false)) {
                return Ok(Vec::new());
            }
            o.values().cloned().collect()
        }
        _ => {
            return Err(terms_error(
                "first a dict or a list, second a string pointing to the subkey",
            ));
        }
    };
    let keys: Vec<&str> = path.split('.').collect();
    let flags = match terms.get(2) {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(terms_error(
                "the optional third item must be a dict with flags ('skip_missing',)",
            ));
        }
    };
    let skip_missing = bool_opt(&flags, "skip_missing", false);
    let last = keys.last().copied().unwrap_or("");
    let mut out = Vec::new();
    for item0 in elements {
        let Value::Object(_) = &item0 else {
            return Err(Failure::new(format!(
                "subelements lookup expects a dictionary, got '{}'",
                py_str(&item0)
            )));
        };
        if item0
            .get("skipped")
            .is_some_and(|s| s != &Value::Bool(false))
        {
            continue;
        }
        let mut item0 = item0;
        // The path walked so far (into nested dicts), and the list found.
        let mut walked: Vec<&str> = Vec::new();
        let mut sublist: Vec<Value> = Vec::new();
        let mut lastsubkey = false;
        for subkey in &keys {
            if *subkey == last {
                lastsubkey = true;
            }
            let here = walk(&item0, &walked);
            let Some(v) = here.get(*subkey) else {
                if skip_missing {
                    continue;
                }
                return Err(Failure::new(format!(
                    "could not find '{subkey}' key in iterated item '{}'",
                    py_str(here)
                )));
            };
            if !lastsubkey {
                if v.is_object() {
                    walked.push(subkey);
                } else if !skip_missing {
                    return Err(Failure::new(format!(
                        "the key {subkey} should point to a dictionary, got '{}'",
                        py_str(v)
                    )));
                }
            } else {
                let Value::Array(_) = v else {
                    return Err(Failure::new(format!(
                        "the key {subkey} should point to a list, got '{}'",
                        py_str(v)
                    )));
                };
                // `subvalue.pop(subkey)`: the pairs' dict loses the list.
                if let Some(Value::Object(m)) = walk_mut(&mut item0, &walked) {
                    if let Some(Value::Array(a)) = m.shift_remove(*subkey) {
                        sublist = a;
                    }
                }
            }
        }
        for item1 in sublist {
            out.push(Value::Array(vec![item0.clone(), item1]));
        }
    }
    Ok(out)
}

fn walk<'v>(v: &'v Value, path: &[&str]) -> &'v Value {
    path.iter()
        .fold(v, |v, k| v.get(*k).unwrap_or(&Value::Null))
}

fn walk_mut<'v>(v: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    let mut v = v;
    for k in path {
        v = v.get_mut(*k)?;
    }
    Some(v)
}

fn fileglob(terms: &[Value], cx: &Ctx<'_>) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    for t in terms {
        let term = term_str(t);
        let term_file = py_basename(&term).to_owned();
        let mut dirs: Vec<String> = Vec::new();
        if term_file != term {
            dirs.extend(find_file(cx.vars, Some("files"), py_dirname(&term), false));
        } else {
            for p in search_path(cx.vars) {
                dirs.push(py_join(&p, "files"));
                dirs.push(p);
            }
        }
        for d in dirs {
            let found: Vec<Value> = glob(&d, &term_file)
                .into_iter()
                .filter(|g| Path::new(g).is_file())
                .map(Value::String)
                .collect();
            if !found.is_empty() {
                out.extend(found);
                break;
            }
        }
    }
    Ok(out)
}

/// `glob.glob(os.path.join(dir, pattern))` for a pattern without `/`:
/// directory order (as `os.scandir`), hidden names only for a hidden
/// pattern.
fn glob(dir: &str, pattern: &str) -> Vec<String> {
    let full = py_join(dir, pattern);
    if !pattern.contains(['*', '?', '[']) {
        let exists = if pattern.is_empty() {
            Path::new(dir).is_dir()
        } else {
            std::fs::symlink_metadata(&full).is_ok()
        };
        return if exists { vec![full] } else { Vec::new() };
    }
    let re = fnmatch_regex(pattern);
    let Ok(rd) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
        return Vec::new();
    };
    let hidden = pattern.starts_with('.');
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| (hidden || !n.starts_with('.')) && re.is_match(n))
        .map(|n| py_join(dir, &n))
        .collect()
}

/// `fnmatch.translate`.
pub(crate) fn fnmatch_regex(pat: &str) -> Regex {
    let c: Vec<char> = pat.chars().collect();
    let mut re = String::from("(?s)^");
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '*' => {
                while i + 1 < c.len() && c[i + 1] == '*' {
                    i += 1;
                }
                re.push_str(".*");
            }
            '?' => re.push('.'),
            '[' => {
                let mut j = i + 1;
                if j < c.len() && c[j] == '!' {
                    j += 1;
                }
                if j < c.len() && c[j] == ']' {
                    j += 1;
                }
                while j < c.len() && c[j] != ']' {
                    j += 1;
                }
                if j >= c.len() {
                    re.push_str("\\[");
                } else {
                    let inner: String = c[i + 1..j].iter().collect();
                    let (neg, inner) = match inner.strip_prefix('!') {
                        Some(x) => (true, x.to_owned()),
                        None => (false, inner),
                    };
                    let inner = inner.replace('\\', "\\\\").replace('[', "\\[");
                    re.push('[');
                    if neg {
                        re.push('^');
                    }
                    re.push_str(&inner);
                    re.push(']');
                    i = j;
                }
            }
            ch => re.push_str(&regex::escape(&ch.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).unwrap_or_else(|_| {
        Regex::new(&format!("^{}$", regex::escape(pat))).expect("escaped pattern")
    })
}

/// `first_found`'s `files`/`paths` options: a list, or a string split at
/// `,` (as the `list` option type).
fn opt_list(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(py_str).collect(),
        Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_owned()).collect(),
        Some(other) => vec![py_str(other)],
    }
}

fn split_on(items: &[String], splitters: &[char]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.split(splitters).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

struct FirstFound {
    files: Vec<String>,
    paths: Vec<String>,
    skip: bool,
}

impl FirstFound {
    fn from(o: &Map<String, Value>) -> Self {
        Self {
            files: opt_list(o.get("files")),
            paths: opt_list(o.get("paths")),
            skip: bool_opt(o, "skip", false),
        }
    }

    fn process(&mut self, terms: &[Value], out: &mut Vec<String>) -> Result<(), Failure> {
        for term in terms {
            let files = match term {
                Value::Object(o) => {
                    *self = Self::from(o);
                    self.files.clone()
                }
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => {
                    self.process(a, out)?;
                    continue;
                }
                other => {
                    return Err(Failure::new(format!(
                        "Invalid term supplied. A string, dict or list is required, not {}).",
                        quoted(py_type_name(other))
                    )));
                }
            };
            let files = split_on(&files, &[',', ';']);
            let paths = split_on(&self.paths, &[',', ':', ';']);
            if paths.is_empty() {
                out.extend(files);
            } else {
                for p in &paths {
                    for f in &files {
                        out.push(py_join(p, f));
                    }
                }
            }
        }
        Ok(())
    }
}

fn first_found(
    terms: &[Value],
    kw: &Map<String, Value>,
    cx: &Ctx<'_>,
) -> Result<Vec<Value>, Failure> {
    // Under `with_first_found` the task's action names the subdir.
    let subdir = cx.with_action.map(|a| {
        let s = ["template", "var", "file"]
            .into_iter()
            .find(|s| a.contains(s))
            .unwrap_or("file");
        format!("{s}s")
    });
    let mut opts = FirstFound::from(kw);
    let from_opts: Vec<Value>;
    let terms = if terms.is_empty() {
        from_opts = opts.files.iter().cloned().map(Value::String).collect();
        &from_opts[..]
    } else {
        terms
    };
    let mut search = Vec::new();
    opts.process(terms, &mut search)?;
    for f in &search {
        if let Some(p) = find_file(cx.vars, subdir.as_deref(), f, true) {
            return Ok(vec![Value::String(unfrack(&p))]);
        }
    }
    if opts.skip {
        return Ok(Vec::new());
    }
    Err(Failure::new("No file was found when using first_found."))
}

/// The loader's base directory: the playbook's.
fn basedir(vars: &Vars) -> String {
    vars.get("playbook_dir")
        .and_then(Value::as_str)
        .map_or_else(|| ".".into(), str::to_owned)
}

/// `ansible_search_path`, or `[role_path or the playbook's directory]`.
pub(crate) fn search_path(vars: &Vars) -> Vec<String> {
    match vars.get("ansible_search_path") {
        Some(Value::Array(a)) => a.iter().map(py_str).collect(),
        _ => vec![
            vars.get("role_path")
                .and_then(Value::as_str)
                .map_or_else(|| basedir(vars), str::to_owned),
        ],
    }
}

/// `LookupBase.find_file_in_search_path` (`subdir` `None` searches as
/// Python does: under a directory literally named `None`, then the path).
fn find_file(
    vars: &Vars,
    subdir: Option<&str>,
    needle: &str,
    ignore_missing: bool,
) -> Option<String> {
    let r = find_needle(vars, subdir.unwrap_or("None"), needle).ok();
    if r.is_none() && !ignore_missing {
        vars.warn(format!(
            "Unable to find {} in expected paths (use -vvvvv to see paths)",
            quoted(needle)
        ));
    }
    r
}

/// ansible-core's `ActionBase._find_needle(dirname, needle)` for the task
/// whose variables are `vars`: the file, or (not found) the paths searched.
pub(crate) fn find_needle(vars: &Vars, dirname: &str, needle: &str) -> Result<String, Vec<String>> {
    let is_role = vars.get("role_path").is_some();
    dwim_stack(&search_path(vars), dirname, needle, is_role, &basedir(vars))
}

/// `DataLoader.path_dwim_relative_stack`: the first candidate that
/// exists, or every candidate tried.
fn dwim_stack(
    paths: &[String],
    dirname: &str,
    source: &str,
    is_role: bool,
    basedir: &str,
) -> Result<String, Vec<String>> {
    if source.starts_with('~') || source.starts_with('/') {
        let p = unfrack(source);
        return if Path::new(&p).exists() {
            Ok(p)
        } else {
            Err(Vec::new())
        };
    }
    // `dirname` is not added where the source already starts with it.
    let under = source.split('/').next() != Some(dirname);
    let mut search = Vec::new();
    for path in paths {
        let upath = unfrack(path);
        let pb_base = py_dirname(&upath).to_owned();
        if pb_base.ends_with("/tasks") && (is_role || is_role_dir(path)) {
            search.push(py_join(&py_join(py_dirname(&pb_base), dirname), source));
            search.push(py_join(&pb_base, source));
        }
        if under {
            search.push(py_join(&py_join(&upath, dirname), source));
        }
        search.push(py_join(&upath, source));
    }
    if under {
        search.push(py_join(&py_join(basedir, dirname), source));
    }
    search.push(py_join(basedir, source));
    match search.iter().find(|c| Path::new(c).exists()) {
        Some(found) => Ok(found.clone()),
        None => Err(search),
    }
}

/// `DataLoader._is_role`.
fn is_role_dir(path: &str) -> bool {
    let up = unfrack(path);
    let parent = py_dirname(path);
    let tasks_like = {
        let t = path.trim_end_matches('/');
        t == "tasks" || t.ends_with("/tasks")
    };
    let any =
        |base: &str, subs: &[&str]| subs.iter().any(|s| Path::new(&py_join(base, s)).exists());
    let untasked = any(path, &["main.yml", "main.yaml", "main"]);
    let tasked_subs = [
        "tasks/main.yml",
        "tasks/main.yaml",
        "tasks/main",
        "meta/main.yml",
        "meta/main.yaml",
        "meta/main",
    ];
    (tasks_like && untasked) || any(&up, &tasked_subs) || any(parent, &tasked_subs)
}

/// `os.path.join(a, b)`.
fn py_join(a: &str, b: &str) -> String {
    if b.starts_with('/') || a.is_empty() {
        return b.to_owned();
    }
    if a.ends_with('/') {
        format!("{a}{b}")
    } else {
        format!("{a}/{b}")
    }
}

/// `os.path.dirname`.
fn py_dirname(p: &str) -> &str {
    match p.rfind('/') {
        None => "",
        Some(i) => {
            let head = &p[..=i];
            let trimmed = head.trim_end_matches('/');
            if trimmed.is_empty() { head } else { trimmed }
        }
    }
}

/// `os.path.basename`.
fn py_basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// `unfrackpath(path, follow=False)`: `~` expanded, made absolute and
/// normalized.
fn unfrack(p: &str) -> String {
    let mut s = p.to_owned();
    if s == "~" || s.starts_with("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            s = format!("{}{}", h.to_string_lossy(), &s[1..]);
        }
    }
    if !s.starts_with('/') {
        let cwd = std::env::current_dir()
            .map(|c| c.display().to_string())
            .unwrap_or_default();
        s = py_join(&cwd, &s);
    }
    normpath(&s)
}

/// `os.path.normpath` of an absolute path.
fn normpath(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let lead = if p.starts_with("//") && !p.starts_with("///") {
        "//"
    } else {
        "/"
    };
    format!("{lead}{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_formats() {
        assert_eq!(py_format_int("web%02d", 3).as_deref(), Some("web03"));
        assert_eq!(py_format_int("%04x", 255).as_deref(), Some("00ff"));
        assert_eq!(py_format_int("%-4d|", 7).as_deref(), Some("7   |"));
        assert_eq!(py_format_int("%+d", 7).as_deref(), Some("+7"));
        assert_eq!(py_format_int("%#o", 8).as_deref(), Some("0o10"));
        assert_eq!(py_format_int("%.2f", 1).as_deref(), Some("1.00"));
        assert_eq!(py_format_int("%e", 15).as_deref(), Some("1.500000e+01"));
        assert_eq!(py_format_int("%g", 100).as_deref(), Some("100"));
        assert_eq!(py_format_int("%5s", 12).as_deref(), Some("   12"));
        assert_eq!(py_format_int("%y", 1), None);
    }

    #[test]
    fn sequences() {
        let s =
            |t: &str| sequence(&[Value::String(t.into())], &Map::new()).map_err(|f| f.to_string());
        assert_eq!(
            s("4-8/2").unwrap(),
            vec![json!("4"), json!("6"), json!("8")]
        );
        assert_eq!(s("start=10 end=1 stride=-3").unwrap().len(), 4);
        assert_eq!(s("count=0").unwrap().len(), 0);
        assert_eq!(
            s("start=5 end=1").unwrap_err(),
            "to count backwards make stride negative"
        );
        assert!(s("end=3 bogus=1").unwrap_err().contains("['bogus']"));
        // Past i64: an error, not an overflow.
        let big = format!("start={} count=3", i64::MAX);
        assert!(s(&big).unwrap_err().starts_with("problem formatting"));
        assert_eq!(py_format_int("%99999999d", 1), None);
    }

    #[test]
    fn combining_lookups() {
        let n = nested(&[json!([1, 2]), json!(["a"]), json!(["x", "y"])]).unwrap();
        assert_eq!(n[0], json!([1, "a", "x"]));
        assert_eq!(n.len(), 4);
        assert_eq!(
            together(&[json!([1, 2]), json!([3])]).unwrap(),
            vec![json!([1, 3]), json!([2, null])]
        );
        let users = json!([{"name": "a", "g": ["x", "y"]}, {"name": "b", "g": []}]);
        let s = subelements(&[users, json!("g")]).unwrap();
        assert_eq!(
            s,
            vec![json!([{"name": "a"}, "x"]), json!([{"name": "a"}, "y"])]
        );
        assert_eq!(Failure::caused("A 'x'.", "B.").to_string(), "A 'x': B.");
        assert_eq!(normpath("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(py_dirname("/a/b/"), "/a/b");
        assert!(fnmatch_regex("*.txt").is_match("a.txt"));
        assert!(!fnmatch_regex("[!a]*").is_match("abc"));
    }
}
