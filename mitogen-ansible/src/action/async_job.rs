//! `async:`/`poll:` (§5 of ANSIBLE-PROTOCOL.md): the module runs under
//! ansible-core's own `async_wrapper` module, so job ids, the job files
//! under `~/.ansible_async`, the timeout kill and every result are
//! async_wrapper's; ansible-core's `async_status` reads our jobs and ours
//! reads theirs. The executor's polling loop and the `async_status`
//! action are reimplemented here.
//!
//! async_wrapper runs the module as a process from a file: for new-style
//! modules that file is a small stand-in for the AnsiballZ wrapper that
//! runs the module from the target's payload cache tree.

use super::Act;
use crate::agent::{ExpandUser, FileKind, ProcTask, RunProcess, TMPDIR_TOKEN, TmpMode};
use crate::args::{self, Internal};
use crate::error::Error;
use crate::pycompat::{json_dumps, shlex_quote};
use crate::result;
use crate::runner::{CALL_SLACK, Exec, REMOTE_TMP, Runner, env_string, failure, millis};
use crate::source::{Module, Style};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// `async_dir`'s default.
const ASYNC_DIR: &str = "~/.ansible_async";

/// A stand-in for the AnsiballZ wrapper: the module from the cache tree.
fn launcher(python: &str, tree: &str, fqn: &str, params: &str) -> Vec<u8> {
    format!(
        r#"#!{python}
# mitogen-ansible: runs {fqn} from the payload cache as AnsiballZ would.
import os
import sys


def _main():
    try:
        os.getcwd()
    except OSError:
        try:
            os.chdir(os.path.expanduser('~'))
        except OSError:
            os.chdir('/')
    scriptdir = os.path.dirname(os.path.realpath(__file__))
    sys.path = [p for p in sys.path if p not in ('', '.', scriptdir)]
    sys.path.insert(0, {tree})
    from ansible.module_utils._internal._ansiballz import _loader
    _loader.run_module(json_params={params}.encode('utf-8', 'surrogateescape'),
                       profile='legacy', module_fqn={fqn_q}, modlib_path={tree}, extensions={{}})


if __name__ == '__main__':
    _main()
"#,
        tree = py_str_lit(tree),
        params = py_str_lit(params),
        fqn_q = py_str_lit(fqn),
    )
    .into_bytes()
}

/// A Python string literal (JSON's escapes are Python's).
fn py_str_lit(s: &str) -> String {
    json_dumps(&Value::String(s.to_owned()))
}

/// `j<secrets.randbelow(999999999999)>`.
fn job_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("j{}", h.finish() % 999_999_999_999)
}

/// `_execute_module(wrap_async=True)`: starts the job; the result is
/// async_wrapper's `{started, finished, ansible_job_id, results_file}`.
pub(crate) fn start(
    r: &Runner,
    act: &mut Act<'_>,
    module: &Module,
    name: &str,
    user_args: Map<String, Value>,
) -> Result<(), Error> {
    let (target, task) = (act.target, act.task);
    let tmp = act.make_tmp()?;
    let internal = Internal {
        check_mode: task.check_mode,
        no_log: task.no_log,
        diff: task.diff,
        version: r.source.version(),
        module_name: name,
        tmpdir: (!target.become_unprivileged).then_some(TMPDIR_TOKEN),
        remote_tmp: REMOTE_TMP,
        keep_remote_files: task.keep_remote_files,
        ignore_unknown_opts: false,
    };
    let margs = args::with_internal(&user_args, &internal);
    let (python, discovered) = r.python(target, &mut act.s)?;
    let (mut files, module_file, args_file) = match module.style {
        Style::NewPython => {
            let tree = r.stage(target, module)?;
            let params = json!({ "ANSIBLE_MODULE_ARGS": margs }).to_string();
            let remote = format!("{}.py", module.remote_name().trim_end_matches(".py"));
            let data = launcher(&python, &tree, &module.fqn, &params);
            (
                vec![(remote.clone(), data, FileKind::Templated)],
                remote,
                None,
            )
        }
        Style::PowerShell => {
            act.s.data = failure(&format!(
                "module ({}) is a PowerShell module: Windows targets are not supported",
                module.name
            ));
            return Ok(());
        }
        style => {
            let Some((files, _cmd, _interp, _)) = r.process_module(act, module, style, &margs)?
            else {
                return Ok(());
            };
            let args = (style != Style::JsonArgs).then(|| "args".to_owned());
            (files, module.remote_name(), args)
        }
    };
    let wrapper = r.find("ansible.legacy.async_wrapper")?;
    let tree = r.stage(target, &wrapper)?;
    files.push((
        "async_wrapper.py".into(),
        launcher(
            &python,
            &tree,
            &wrapper.fqn,
            r#"{"ANSIBLE_MODULE_ARGS": {}}"#,
        ),
        FileKind::Plain,
    ));
    let mut env = env_string(task);
    if !env.is_empty() {
        env.push(' ');
    }
    env.push_str(&format!("ANSIBLE_ASYNC_DIR={}", shlex_quote(ASYNC_DIR)));
    let mut cmd = vec![
        env,
        python.clone(),
        format!("{TMPDIR_TOKEN}async_wrapper.py"),
        job_prefix(),
        task.async_limit.to_string(),
        format!("{TMPDIR_TOKEN}{module_file}"),
        args_file.map_or_else(|| "_".to_owned(), |a| format!("{TMPDIR_TOKEN}{a}")),
    ];
    if task.keep_remote_files {
        cmd.push("-preserve_tmp".into());
    }
    let run = act.call::<RunProcess>(
        &ProcTask {
            files,
            command: format!("{} && sleep 0", cmd.join(" ")),
            tmp: Some(TmpMode::Shared {
                path: tmp,
                remove: false,
            }),
            env: Vec::new(),
            cwd: r.cwd(target),
            timeout_ms: millis(task.timeout),
        },
        task.timeout + CALL_SLACK,
    )?;
    let run = r.transport_view(target, run);
    result::parse(&run, Some(&python), &mut act.s);
    result::after_module(&mut act.s, discovered.as_deref());
    // async_wrapper cleans up its tmp dir itself; the controller forgets it.
    act.keep_tmp = true;
    act.s.data.shift_remove("_ansible_suppress_tmpdir_delete");
    act.s.data.insert("changed".into(), true.into());
    Ok(())
}

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
    let r = act.runner;
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
