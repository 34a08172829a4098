//! From module stdout to the result ansible-core's action and executor
//! layers produce (§4 of ANSIBLE-PROTOCOL.md): the junk filter, the
//! deserialization-failure shape, internal-key removal, `*_lines`,
//! `failed`/`changed` defaults, warnings, and the callback view.

use crate::agent::RawRun;
use crate::pycompat::{decode, splitlines};
use serde_json::{Map, Value, json};

/// What `exception` looks like once a callback sees it (tracebacks off).
pub(crate) const NO_TRACEBACK: &str = "(traceback unavailable)";
const CENSORED: &str =
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result";

/// How a task ended: the callback event it would fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Status {
    /// `v2_runner_on_ok`, nothing changed.
    Ok,
    /// `v2_runner_on_ok` with `changed: true`.
    Changed,
    /// `v2_runner_on_failed`.
    Failed,
    /// `v2_runner_on_skipped`.
    Skipped,
    /// `v2_runner_on_unreachable`: the target went away.
    Unreachable,
}

impl Status {
    /// The status a finished result dict fires, as ansible-core's
    /// `TaskResult.is_failed`/`is_skipped`/`is_changed` decide it:
    /// `failed_when`'s verdict, when it gave one, over `failed`; then
    /// `skipped`, then `changed`. (Unreachable is decided by the
    /// connection, not by the dict.) The one classification of a result:
    /// the runner and the play layer's conditionals and loops use it.
    ///
    /// ```
    /// use mitogen_ansible::Status;
    /// let d = serde_json::json!({"failed": true, "failed_when_result": false, "changed": true});
    /// assert_eq!(Status::of(d.as_object().unwrap()), Status::Changed);
    /// ```
    pub fn of(d: &Map<String, Value>) -> Self {
        let set = |k: &str| d.get(k).is_some_and(|v| !is_falsy(v));
        let failed = match d.get("failed_when_result") {
            Some(f) => !is_falsy(f),
            None => set("failed"),
        };
        if failed {
            Self::Failed
        } else if set("skipped") {
            Self::Skipped
        } else if set("changed") {
            Self::Changed
        } else {
            Self::Ok
        }
    }
}

/// A result being shaped, with the warnings the action layer emitted.
#[derive(Debug, Default)]
pub(crate) struct Shaping {
    pub(crate) data: Map<String, Value>,
    /// Warnings the controller side emitted (discovery, junk, ...), in order.
    pub(crate) warnings: Vec<String>,
    /// The message of the module's own `exception` (an `ErrorSummary`).
    pub(crate) exception_msg: Option<String>,
    /// The task's python once resolved: `(path, Some(path) if discovered)`;
    /// an action running several modules discovers (and warns) once, and
    /// every module result then carries the fact.
    pub(crate) python: Option<(String, Option<String>)>,
}

/// `_filter_non_json_lines(stdout, objects_only=True)`.
fn filter_non_json(data: &str) -> Result<(String, Vec<String>), &'static str> {
    let lines = splitlines(data);
    let start = lines
        .iter()
        .position(|l| l.trim().starts_with('{'))
        .ok_or("No start of json char found")?;
    let lines = &lines[start..];
    let rev = lines
        .iter()
        .rev()
        .position(|l| l.trim().ends_with('}'))
        .ok_or("No end of json char found")?;
    let mut warnings = Vec::new();
    let keep = lines.len() - rev;
    if rev > 0 {
        let junk = &lines[keep..];
        if junk.iter().any(|l| !l.trim().is_empty()) {
            warnings.push(format!(
                "Module invocation had junk after the JSON data: {}",
                junk.join("\n")
            ));
        }
    }
    Ok((lines[..keep].join("\n"), warnings))
}

/// Python's `json.loads` error text for the common cases.
fn py_json_error(text: &str, e: &serde_json::Error) -> String {
    let (line, mut col) = (e.line(), e.column().max(1));
    if e.to_string().starts_with("expected ident") || e.to_string().starts_with("expected value") {
        // serde points at the failing byte, Python at the token's start.
        let l: Vec<char> = text
            .split('\n')
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .chars()
            .collect();
        while col > 1 && l.get(col - 2).is_some_and(|c| c.is_ascii_alphanumeric()) {
            col -= 1;
        }
    }
    let pos: usize = text
        .split('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count() + 1)
        .sum::<usize>()
        + col
        - 1;
    let what = match e.classify() {
        serde_json::error::Category::Eof => "Expecting value",
        _ if e.to_string().starts_with("trailing characters") => "Extra data",
        _ if e.to_string().starts_with("expected ident") => "Expecting value",
        _ if e.to_string().starts_with("key must be a string") => {
            "Expecting property name enclosed in double quotes"
        }
        _ if e.to_string().starts_with("expected `:`") => "Expecting ':' delimiter",
        _ if e.to_string().starts_with("expected `,` or `}`") => "Expecting ',' delimiter",
        _ => "Expecting value",
    };
    format!("{what}: line {line} column {col} (char {pos})")
}

/// `ActionBase._parse_returned_data`.
pub(crate) fn parse(raw: &RawRun, interpreter: Option<&str>, s: &mut Shaping) {
    let stdout = decode(&raw.stdout);
    let stderr = decode(&raw.stderr);
    let parsed = match filter_non_json(&stdout) {
        Ok((text, warnings)) => {
            s.warnings.extend(warnings);
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err("Expecting value: line 1 column 1 (char 0)".to_owned()),
                Err(e) => Err(py_json_error(&text, &e)),
            }
        }
        Err(e) => Err(e.to_owned()),
    };
    match parsed {
        Ok(mut m) => {
            // normalize_result_exception: a failure always carries one; a
            // falsy one goes; the message is kept for the executor's `msg`.
            let failed = m.get("failed").is_some_and(|v| !is_falsy(v));
            let exc = m.shift_remove("exception");
            s.exception_msg = match &exc {
                Some(Value::Object(o)) => o
                    .get("event")
                    .and_then(|e| e.get("msg"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            };
            if failed || exc.as_ref().is_some_and(|e| !is_falsy(e)) {
                m.insert("exception".into(), NO_TRACEBACK.into());
            }
            m.insert("_ansible_parsed".into(), true.into());
            s.data = m;
        }
        Err(cause) => {
            let not_found = interpreter.is_some_and(|i| {
                let i = i.trim_start_matches(['!', '#']);
                [
                    ": No such file or directory",
                    ": not found",
                    ": command not found",
                ]
                .iter()
                .any(|t| {
                    let needle = format!("{i}{t}");
                    stderr.contains(&needle) || stdout.contains(&needle)
                })
            });
            let msg = match interpreter {
                Some(i) if not_found => format!(
                    "The module interpreter '{}' was not found.",
                    i.trim_start_matches(['!', '#'])
                ),
                _ => format!("Module result deserialization failed: {cause}"),
            };
            s.data = Map::new();
            s.data.insert("failed".into(), true.into());
            s.data.insert("msg".into(), msg.into());
            s.data.insert("exception".into(), NO_TRACEBACK.into());
            s.data.insert("_ansible_parsed".into(), false.into());
            s.data.insert("module_stdout".into(), stdout.into());
            s.data.insert("module_stderr".into(), stderr.into());
            s.data.insert("rc".into(), raw.rc.into());
        }
    }
}

/// The rest of `_execute_module`: internal keys, `*_lines`, discovery facts.
pub(crate) fn after_module(s: &mut Shaping, discovered: Option<&str>) {
    let d = &mut s.data;
    d.shift_remove("_ansible_suppress_tmpdir_delete");
    if let Some(r) = d.get("results").filter(|r| !r.is_array()).cloned() {
        d.shift_remove("results");
        d.insert("ansible_module_results".into(), r);
        s.warnings.push(
            "Found internal 'results' key in module return, renamed to 'ansible_module_results'."
                .into(),
        );
    }
    let internal: Vec<String> = d
        .keys()
        .filter(|k| {
            (k.starts_with("_ansible_") && k.as_str() != "_ansible_parsed")
                || k.as_str() == "add_host"
                || k.as_str() == "add_group"
        })
        .cloned()
        .collect();
    for k in internal {
        if let Some(v) = d.shift_remove(&k) {
            s.warnings.push(format!(
                "Removed unexpected internal key in module return: {k} = {}",
                py_display(&v)
            ));
        }
    }
    for k in ["warnings", "deprecations"] {
        if d.get(k).is_some_and(is_falsy) {
            d.shift_remove(k);
        }
    }
    if let Some(Value::Object(f)) = d.get_mut("ansible_facts") {
        f.retain(|k, _| {
            !k.starts_with("discovered_interpreter_")
                && !k.starts_with("ansible_discovered_interpreter_")
        });
    }
    add_lines(d);
    if let Some(interp) = discovered {
        let facts = d.entry("ansible_facts").or_insert_with(|| json!({}));
        if !facts.is_object() {
            *facts = json!({});
        }
        if let Some(f) = facts.as_object_mut() {
            f.insert("discovered_interpreter_python".into(), interp.into());
        }
    }
}

/// `stdout_lines`/`stderr_lines` where `stdout`/`stderr` exist.
pub(crate) fn add_lines(d: &mut Map<String, Value>) {
    for (k, lines) in [("stdout", "stdout_lines"), ("stderr", "stderr_lines")] {
        if d.contains_key(k) && !d.contains_key(lines) {
            let text = d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let v: Vec<Value> = splitlines(&text).into_iter().map(Value::from).collect();
            d.insert(lines.into(), Value::Array(v));
        }
    }
}

fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// `'%s' % v` for a JSON value (Python's `str`).
fn py_display(v: &Value) -> String {
    crate::pycompat::py_str(v)
}

/// One warning as the callback sees it: a string, or a `WarningSummary`'s message.
fn warning_text(w: &Value) -> String {
    match w {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("event")
            .and_then(|e| e.get("msg"))
            .and_then(Value::as_str)
            .map_or_else(|| w.to_string(), str::to_owned),
        other => py_display(other),
    }
}

/// `TaskExecutor`: `failed`/`changed` defaults, warnings, `_ansible_no_log`;
/// then the register view and the callback view.
pub(crate) fn finish(mut s: Shaping, no_log: bool) -> (Status, Value, Value) {
    let d = &mut s.data;
    if !d.contains_key("failed") {
        let bad_rc = match d.get("rc") {
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(Value::String(r)) => r != "0",
            Some(_) => true,
            None => false,
        };
        d.insert("failed".into(), bad_rc.into());
    }
    if !d.contains_key("changed") {
        d.insert("changed".into(), false.into());
    }
    let failed = d.get("failed").is_some_and(|v| !is_falsy(v));
    if failed {
        d.insert("failed".into(), true.into());
        if !d.contains_key("msg") {
            let why = s
                .exception_msg
                .take()
                .unwrap_or_else(|| "Unknown error.".into());
            d.insert(
                "msg".into(),
                format!("Task failed: Module failed: {why}").into(),
            );
        }
        d.entry("exception").or_insert_with(|| NO_TRACEBACK.into());
    }
    d.insert("_ansible_no_log".into(), no_log.into());
    // Warnings: the controller's first, then the module's; replace the list.
    let mut warnings = std::mem::take(&mut s.warnings);
    if let Some(Value::Array(w)) = d.shift_remove("warnings") {
        warnings.extend(w.iter().map(warning_text));
    }
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    if !warnings.is_empty() {
        d.insert(
            "warnings".into(),
            warnings.into_iter().map(Value::from).collect(),
        );
    }
    if let Some(Value::Array(deps)) = d.get("deprecations").cloned() {
        let out: Vec<Value> = deps.iter().map(deprecation_view).collect();
        d.insert("deprecations".into(), Value::Array(out));
    }
    let status = Status::of(d);
    // What the strategy stores for `register:`: internal keys stripped at
    // every level, `invocation` dropped.
    let mut register = Value::Object(s.data.clone());
    strip_internal_keys(&mut register);
    if let Value::Object(m) = &mut register {
        m.shift_remove("invocation");
    }
    let callback = callback_view(&s.data, no_log);
    (status, register, callback)
}

fn deprecation_view(d: &Value) -> Value {
    match d {
        Value::Object(o) if o.contains_key("event") => {
            let ev = &o["event"];
            let mut m = Map::new();
            m.insert("msg".into(), ev.get("msg").cloned().unwrap_or(Value::Null));
            for k in ["collection_name", "version", "date"] {
                if let Some(v) = o.get(k).filter(|v| !v.is_null()) {
                    m.insert(k.into(), v.clone());
                }
            }
            if let Some(dep) = o.get("deprecator") {
                m.insert("deprecator".into(), dep.clone());
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// `_RawTaskResult.as_callback_task_result`.
pub fn callback_view(d: &Map<String, Value>, no_log: bool) -> Value {
    if no_log || d.get("_ansible_no_log").and_then(Value::as_bool) == Some(true) {
        let mut m = Map::new();
        for k in [
            "attempts",
            "changed",
            "retries",
            "_ansible_no_log",
            "exception",
            "warnings",
            "deprecations",
        ] {
            if let Some(v) = d.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        m.insert("censored".into(), CENSORED.into());
        return Value::Object(m);
    }
    let mut v = Value::Object(
        d.iter()
            .filter(|(k, _)| k.as_str() != "failed" && k.as_str() != "skipped")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    strip_internal(&mut v, true);
    v
}

/// ansible-core's `strip_internal_keys(v)`: every `_ansible_*` key, at
/// every level (what `register:` stores and callbacks dump).
///
/// ```
/// let mut v = serde_json::json!({"a": 1, "_ansible_no_log": false, "r": [{"_ansible_x": 1}]});
/// mitogen_ansible::strip_internal_keys(&mut v);
/// assert_eq!(v, serde_json::json!({"a": 1, "r": [{}]}));
/// ```
pub fn strip_internal_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with("_ansible_"));
            m.values_mut().for_each(strip_internal_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_internal_keys),
        _ => {}
    }
}

fn strip_internal(v: &mut Value, top: bool) {
    const KEEP: [&str; 4] = [
        "_ansible_verbose_always",
        "_ansible_item_label",
        "_ansible_no_log",
        "_ansible_verbose_override",
    ];
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with("_ansible_") || KEEP.contains(&k.as_str()));
            for x in m.values_mut() {
                strip_internal(x, false);
            }
        }
        Value::Array(a) => {
            for x in a {
                strip_internal(x, false);
            }
        }
        _ => {}
    }
    let _ = top;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_filter() {
        assert_eq!(
            filter_non_json("motd\n{\"a\": 1}\n").unwrap(),
            ("{\"a\": 1}".to_owned(), vec![])
        );
        let (j, w) = filter_non_json("x\n  {\"a\":\n 1}  \ntrailer\n\n").unwrap();
        assert_eq!(j, "  {\"a\":\n 1}  ");
        assert_eq!(
            w,
            ["Module invocation had junk after the JSON data: trailer\n"]
        );
        assert_eq!(
            filter_non_json("nothing").unwrap_err(),
            "No start of json char found"
        );
        assert_eq!(
            filter_non_json("{ open").unwrap_err(),
            "No end of json char found"
        );
    }

    #[test]
    fn python_json_errors() {
        let text = "{\"a\": nope}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert_eq!(
            py_json_error(text, &e),
            "Expecting value: line 1 column 7 (char 6)"
        );
        let text = "{\"changed\": nope}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert_eq!(
            py_json_error(text, &e),
            "Expecting value: line 1 column 13 (char 12)"
        );
    }
}
