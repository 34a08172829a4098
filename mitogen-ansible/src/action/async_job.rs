//! `poll:` and the `async_status` action (§5 of ANSIBLE-PROTOCOL.md) for
//! jobs started under async_wrapper (`exec/async_wrap.rs`): ansible-core's
//! `async_status` reads our jobs and ours reads theirs. The executor's
//! polling loop is reimplemented here.

use crate::agent::ExpandUser;
use crate::error::Error;
use crate::exec::{ASYNC_DIR, Act, Exec, failure};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// `merge_hash(a, b)`: b wins, dicts merged recursively, a's order kept.
fn merge_hash(a: &mut Map<String, Value>, b: Map<String, Value>) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Value::Object(x)), Value::Object(y)) => merge_hash(x, y),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

/// The `async_status` action (`plugins/action/async_status.py`) for job
/// `jid`, `mode` `status` or `cleanup`.
fn status(act: &mut Act<'_>, jid: &str, mode: &str) -> Result<Map<String, Value>, Error> {
    let r = act.engine;
    let async_dir = act.call::<ExpandUser>(&ASYNC_DIR.to_owned(), Duration::from_secs(60))?;
    let mut results = Map::new();
    results.insert("started".into(), false.into());
    results.insert("finished".into(), false.into());
    results.insert("stdout".into(), "".into());
    results.insert("stderr".into(), "".into());
    results.insert("stdout_lines".into(), json!([]));
    results.insert("stderr_lines".into(), json!([]));
    results.insert("ansible_job_id".into(), jid.into());
    let log_path = format!("{}/{jid}", async_dir.trim_end_matches('/'));
    if mode == "cleanup" {
        results.insert("erased".into(), log_path.into());
    } else {
        results.insert("results_file".into(), log_path.into());
        results.insert("started".into(), true.into());
    }
    let mut args = Map::new();
    args.insert("jid".into(), jid.into());
    args.insert("mode".into(), mode.into());
    args.insert("_async_dir".into(), async_dir.into());
    let data = r.exec_module(act, "ansible.legacy.async_status", args, &Exec::default())?;
    merge_hash(&mut results, data);
    for k in ["started", "finished"] {
        let b = results.get(k).is_some_and(truthy);
        results.insert(k.into(), b.into());
    }
    Ok(results)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// An `async_status:` task.
pub(crate) fn status_action(act: &mut Act<'_>) -> Result<(), Error> {
    let a = act.args()?;
    let Some(jid) = a.get("jid").and_then(Value::as_str).map(str::to_owned) else {
        act.s.data = failure("missing required arguments: jid");
        return Ok(());
    };
    let mode = match a.get("mode").and_then(Value::as_str) {
        None => "status".to_owned(),
        Some(m @ ("status" | "cleanup")) => m.to_owned(),
        Some(m) => {
            act.s.data = failure(&format!(
                "value of mode must be one of: status, cleanup, got: {m}"
            ));
            return Ok(());
        }
    };
    act.s.data = status(act, &jid, &mode)?;
    Ok(())
}

/// `TaskExecutor._poll_async_result` for a task with `poll > 0`.
pub(crate) fn poll(act: &mut Act<'_>) -> Result<(), Error> {
    let task = act.task;
    let Some(jid) = act
        .s
        .data
        .get("ansible_job_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        let mut d = Map::new();
        d.insert("failed".into(), true.into());
        d.insert(
            "msg".into(),
            "No job id was returned by the async task".into(),
        );
        act.s.data = d;
        return Ok(());
    };
    let step = task.poll;
    let mut time_left = i64::try_from(task.async_limit).unwrap_or(i64::MAX);
    let mut last = Map::new();
    // The polled result replaces the launch's, which carried the discovered
    // interpreter: ansible-core's final result has the discovery warning but
    // not the fact (so it is not saved, and the host's next task reports it
    // again). The polls must not add it back.
    if let Some((_, discovered)) = &mut act.s.python {
        *discovered = None;
    }
    while time_left > 0 {
        std::thread::sleep(Duration::from_secs(step));
        let res = status(act, &jid, "status")?;
        time_left -= i64::try_from(step).unwrap_or(i64::MAX);
        let flag = |k: &str| res.get(k).is_some_and(truthy);
        let done =
            flag("finished") || (flag("failed") && flag("_ansible_parsed")) || flag("skipped");
        last = res;
        if done {
            break;
        }
    }
    let flag = |k: &str| last.get(k).is_some_and(truthy);
    if !flag("finished") {
        let msg = if flag("_ansible_parsed") {
            format!(
                "async task did not complete within the requested time - {}s",
                task.async_limit
            )
        } else {
            "async task produced unparsable results".to_owned()
        };
        let mut d = Map::new();
        d.insert("failed".into(), true.into());
        d.insert("msg".into(), msg.into());
        d.insert("async_result".into(), Value::Object(last));
        act.s.data = d;
        return Ok(());
    }
    // The executor's cleanup run: its result is dropped.
    let keep = std::mem::take(&mut act.s.warnings);
    let _ = status(act, &jid, "cleanup")?;
    act.s.warnings = keep;
    act.s.data = last;
    Ok(())
}
