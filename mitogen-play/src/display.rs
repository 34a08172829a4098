//! ansible-core's default stdout callback, for one host's result: which
//! line it prints (`ok:`, `changed:`, `fatal: ... FAILED!`, `skipping:`,
//! a line per loop item), what it hides (`_ansible_*` keys, `invocation`
//! and `diff` below `-vvv`, `exception`; a `debug` result's other keys),
//! and its JSON: Python's `json.dumps(sort_keys=True)`, compact, or with
//! an indent of 4 when the result is always shown (`debug`) or at `-vvv`.
//!
//! ```
//! use mitogen_play::display::dump_results;
//! let r = serde_json::json!({"msg": "hi", "changed": false, "_ansible_no_log": false});
//! assert_eq!(dump_results(&r, 0), r#"{"changed": false, "msg": "hi"}"#);
//! ```

use crate::events::{HostResult, Raised};
use crate::playbook::short;
use mitogen_ansible::Status;
use mitogen_ansible::pycompat::py_str;
use serde_json::{Map, Value};
use std::io::Write;

/// What `debug` keeps when it has `msg` (`_DEBUG_ALLOWED_KEYS`).
const DEBUG_ALLOWED: &[&str] = &["msg", "exception", "warnings", "deprecations"];
/// What `debug` hides otherwise (`_hide_in_debug`).
const HIDE_IN_DEBUG: &[&str] = &["changed", "failed", "skipped", "invocation", "skip_reason"];

/// The default callback's state over a run.
#[derive(Debug, Default)]
pub struct DefaultCallback {
    /// `-v` count.
    pub verbosity: u8,
    /// `[ERROR]` texts shown so far: ansible-core's display shows each
    /// once (a task failing the same way on many hosts shows it once).
    errors_shown: std::collections::HashSet<String>,
}

impl DefaultCallback {
    /// A callback at `verbosity` (`-v` count).
    pub fn new(verbosity: u8) -> Self {
        Self {
            verbosity,
            ..Self::default()
        }
    }

    /// Prints one host's result as the default callback does.
    ///
    /// # Errors
    /// Writing to `out`.
    pub fn host_result(&mut self, out: &mut dyn Write, r: &HostResult) -> std::io::Result<()> {
        host_result(out, r, self.verbosity, &mut self.errors_shown)
    }
}

fn host_result(
    out: &mut dyn Write,
    r: &HostResult,
    verbosity: u8,
    shown_errors: &mut std::collections::HashSet<String>,
) -> std::io::Result<()> {
    let host = match &r.delegated_to {
        Some(d) if *d != r.host => format!("{} -> {d}", r.host),
        _ => r.host.clone(),
    };
    if matches!(
        short(&r.action),
        "include_tasks" | "include_role" | "include"
    ) && matches!(r.status, Status::Ok | Status::Changed)
    {
        // An include's result is its `included:` line(s).
        return Ok(());
    }
    let mut result = match &r.result {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Array(items)) = result.get("results").filter(|_| is_loop(&result)) {
        for item in items {
            let Value::Object(item) = item else { continue };
            if item.get("failed").is_some_and(crate::template::truthy) {
                error_block(out, item, r, shown_errors)?;
            }
            item_line(out, &host, item, &r.action, verbosity)?;
        }
        if r.status == Status::Failed && r.ignored {
            writeln!(out, "...ignoring")?;
        }
        return Ok(());
    }
    clean_results(&mut result, &r.action);
    handle_warnings(&mut result);
    let shown = Value::Object(result.clone());
    match r.status {
        Status::Failed => {
            error_block(out, &result, r, shown_errors)?;
            writeln!(
                out,
                "fatal: [{host}]: FAILED! => {}",
                dump_results(&shown, verbosity)
            )?;
            if r.ignored {
                writeln!(out, "...ignoring")?;
            }
        }
        Status::Unreachable => writeln!(
            out,
            "fatal: [{host}]: UNREACHABLE! => {}",
            dump_results(&shown, verbosity)
        )?,
        Status::Skipped => {
            write!(out, "skipping: [{host}]")?;
            if run_is_verbose(&result, verbosity) {
                write!(out, " => {}", dump_results(&shown, verbosity))?;
            }
            writeln!(out)?;
        }
        _ => {
            let word = if r.changed { "changed" } else { "ok" };
            write!(out, "{word}: [{host}]")?;
            if run_is_verbose(&result, verbosity) {
                write!(out, " => {}", dump_results(&shown, verbosity))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `_handle_warnings`: a result's warnings are shown as warnings (on
/// stderr, as ansible-core's display does), not in its dump.
fn handle_warnings(result: &mut Map<String, Value>) {
    if let Some(Value::Array(ws)) = result.shift_remove("warnings") {
        for w in ws {
            eprintln!("[WARNING]: {}", py_str(&w));
        }
    }
}

/// `_handle_exception`: 2.19's `[ERROR]: Task failed: ...` with the task's
/// origin and the lines before it.
fn error_block(
    out: &mut dyn Write,
    result: &Map<String, Value>,
    r: &HostResult,
    shown: &mut std::collections::HashSet<String>,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let msg = result
        .get("msg")
        .map_or_else(|| "Unknown error.".to_owned(), py_str);
    // ansible-core's error normalization: a failure the module reported
    // is "Module failed", one the action or `failed_when` decided is
    // "Action failed"; an empty message leaves the default sentence.
    let by_action = crate::executor::is_controller_action(short(&r.action))
        || result
            .get("failed_when_result")
            .is_some_and(crate::template::truthy);
    let kind = if by_action { "Action" } else { "Module" };
    let text = if msg.starts_with("Task failed: ") || r.raised == Raised::Bare {
        msg
    } else if r.raised == Raised::InTask {
        format!("Task failed: {msg}")
    } else if msg.is_empty() {
        format!("Task failed: {kind} failed.")
    } else {
        format!("Task failed: {kind} failed: {msg}")
    };
    let mut block = format!("[ERROR]: {text}\n");
    let o = &r.origin;
    if o.line == 0 {
        block.push('\n');
        return show_once(out, block, shown);
    }
    let path = std::path::absolute(&*o.file).unwrap_or_else(|_| o.file.to_path_buf());
    let _ = if o.col > 0 {
        writeln!(block, "Origin: {}:{}:{}\n", path.display(), o.line, o.col)
    } else {
        writeln!(block, "Origin: {}:{}\n", path.display(), o.line)
    };
    for l in source_context(&o.file, o.line, o.col) {
        let _ = writeln!(block, "{l}");
    }
    block.push('\n');
    show_once(out, block, shown)
}

/// Writes `block` unless it was written before.
fn show_once(
    out: &mut dyn Write,
    block: String,
    shown: &mut std::collections::HashSet<String>,
) -> std::io::Result<()> {
    if shown.contains(&block) {
        return Ok(());
    }
    out.write_all(block.as_bytes())?;
    shown.insert(block);
    Ok(())
}

/// `SourceContext.from_origin`: up to two lines before `line`, the line,
/// and a marker under `col`; line labels right-aligned, long lines cut at
/// 120 columns.
fn source_context(path: &std::path::Path, line: usize, col: usize) -> Vec<String> {
    const WIDTH: usize = 120;
    const CUT: &str = "...";
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let start = line.saturating_sub(3);
    let lines: Vec<&str> = text.split('\n').skip(start).take(line - start).collect();
    if lines.len() != line - start {
        return vec!["(source not shown: file truncated)".into()];
    }
    let label = line.to_string().len();
    let max = WIDTH - label - 1;
    let mut usable = max;
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut l = l.replace('\t', " ");
        if l.chars().count() > max {
            l = l.chars().take(max - CUT.len()).collect::<String>() + CUT;
            usable = max - CUT.len();
        }
        let n = start + i + 1;
        let gap = if l.is_empty() { "" } else { " " };
        out.push(format!("{n:>label$}{gap}{l}"));
    }
    if col >= 1 && usable >= col {
        let marker = format!("column {col}");
        let idx = col - 1;
        let m = if idx + 2 + marker.len() > max {
            format!(
                "{}{marker} ^",
                " ".repeat(idx.saturating_sub(marker.len() + 1))
            )
        } else {
            format!("{}^ {marker}", " ".repeat(idx))
        };
        out.push(format!("{} {m}", " ".repeat(label)));
    }
    out
}

/// `v2_runner_item_on_ok` / `_on_failed` / `_on_skipped`.
fn item_line(
    out: &mut dyn Write,
    host: &str,
    item: &Map<String, Value>,
    action: &str,
    verbosity: u8,
) -> std::io::Result<()> {
    let mut item = item.clone();
    let set = |k: &str| item.get(k).is_some_and(crate::template::truthy);
    let (failed, skipped, changed) = (set("failed"), set("skipped"), set("changed"));
    clean_results(&mut item, action);
    handle_warnings(&mut item);
    let label = item
        .get("_ansible_item_label")
        .or_else(|| item.get("item"))
        .map_or_else(|| "None".to_owned(), py_str);
    // An item's callback result, as the loop's: without `failed` and
    // `skipped` (the event says which).
    item.shift_remove("failed");
    item.shift_remove("skipped");
    let shown = Value::Object(item.clone());
    if failed {
        return writeln!(
            out,
            "failed: [{host}] (item={label}) => {}",
            dump_results(&shown, verbosity)
        );
    }
    if skipped {
        write!(out, "skipping: [{host}] => (item={label}) ")?;
    } else {
        let word = if changed { "changed" } else { "ok" };
        write!(out, "{word}: [{host}] => (item={label})")?;
    }
    if run_is_verbose(&item, verbosity) {
        write!(out, " => {}", dump_results(&shown, verbosity))?;
    }
    writeln!(out)
}

/// Whether a result holds a loop's items (`result._task.loop and
/// 'results' in result`).
fn is_loop(result: &Map<String, Value>) -> bool {
    match result.get("results") {
        Some(Value::Array(items)) => items
            .iter()
            .all(|i| i.get("ansible_loop_var").is_some() || i.get("_ansible_item_label").is_some()),
        _ => false,
    }
}

/// `_run_is_verbose`: `-v`, or a result that asks to be shown, unless it
/// asks not to be.
fn run_is_verbose(result: &Map<String, Value>, verbosity: u8) -> bool {
    let flag = |k: &str| result.get(k).and_then(Value::as_bool) == Some(true);
    (verbosity > 0 || flag("_ansible_verbose_always")) && !flag("_ansible_verbose_override")
}

/// `_clean_results`: what `debug` shows is what it was asked for.
fn clean_results(result: &mut Map<String, Value>, action: &str) {
    if short(action) != "debug" {
        return;
    }
    if result.contains_key("msg") {
        result.retain(|k, _| DEBUG_ALLOWED.contains(&k.as_str()) || k.starts_with('_'));
    } else {
        for k in HIDE_IN_DEBUG {
            result.shift_remove(*k);
        }
    }
}

/// `_dump_results`: the result without internal keys, `exception`, and
/// `invocation`/`diff` below `-vvv`, as Python's `json.dumps(...,
/// sort_keys=True)`, indented by 4 when always shown or at `-vvv`.
pub fn dump_results(result: &Value, verbosity: u8) -> String {
    let Value::Object(m) = result else {
        return python_json(result, None);
    };
    if m.get("_ansible_no_log").and_then(Value::as_bool) == Some(true) {
        return r#"{"censored": "the output has been hidden due to the fact that 'no_log: true' was specified for this result"}"#.to_owned();
    }
    let indent = (m.get("_ansible_verbose_always").and_then(Value::as_bool) == Some(true)
        || verbosity > 2)
        .then_some(4);
    let mut abridged = Value::Object(m.clone());
    mitogen_ansible::strip_internal_keys(&mut abridged);
    if let Value::Object(a) = &mut abridged {
        if verbosity < 3 {
            a.shift_remove("invocation");
            a.shift_remove("diff");
        }
        a.shift_remove("exception");
    }
    python_json(&abridged, indent)
}

/// Python's `json.dumps(v, sort_keys=True, ensure_ascii=False,
/// indent=indent)`: `", "` and `": "` compact, `","` and indented lines
/// otherwise.
fn python_json(v: &Value, indent: Option<usize>) -> String {
    let mut s = String::new();
    write_json(&mut s, v, indent, 0);
    s
}

fn write_json(s: &mut String, v: &Value, indent: Option<usize>, level: usize) {
    let newline = |s: &mut String, level: usize| {
        if let Some(n) = indent {
            s.push('\n');
            s.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            s.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                newline(s, level + 1);
                s.push_str(&Value::String(k.clone()).to_string());
                s.push_str(": ");
                write_json(s, &m[k], indent, level + 1);
            }
            newline(s, level);
            s.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            s.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                newline(s, level + 1);
                write_json(s, x, indent, level + 1);
            }
            newline(s, level);
            s.push(']');
        }
        Value::Object(_) => s.push_str("{}"),
        Value::Array(_) => s.push_str("[]"),
        other => s.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_json_shapes() {
        let v = json!({"b": [1, 2], "a": {}, "c": "é", "d": []});
        assert_eq!(
            python_json(&v, None),
            r#"{"a": {}, "b": [1, 2], "c": "é", "d": []}"#
        );
        assert_eq!(
            python_json(&v, Some(4)),
            "{\n    \"a\": {},\n    \"b\": [\n        1,\n        2\n    ],\n    \"c\": \"é\",\n    \"d\": []\n}"
        );
    }

    #[test]
    fn debug_shows_only_what_it_was_asked_for() {
        let mut r = json!({"msg": "x", "changed": false, "_ansible_verbose_always": true})
            .as_object()
            .cloned()
            .unwrap();
        clean_results(&mut r, "debug");
        assert_eq!(
            dump_results(&Value::Object(r), 0),
            "{\n    \"msg\": \"x\"\n}"
        );
    }
}
