//! The actions that run one module or command: `normal` (most modules),
//! `command`/`shell` and `raw`.

use crate::agent::{ProcTask, RunProcess};
use crate::error::Error;
use crate::exec::{Act, CALL_SLACK, Exec, millis, raw_result, short_action, task_args};
use crate::pycompat::shlex_quote;
use serde_json::{Map, Value};

pub(crate) fn raw(act: &mut Act<'_>) -> Result<(), Error> {
    let (target, task) = (act.target, act.task);
    if !task.environment.is_empty() {
        act.s
            .warnings
            .push("raw module does not support the environment keyword".into());
    }
    let (cmd, executable) = match &task.args {
        Value::String(c) => (c.clone(), None),
        Value::Object(o) => (
            o.get("_raw_params")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            o.get("executable")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        other => (other.to_string(), None),
    };
    if task.check_mode {
        act.s.data.insert("skipped".into(), true.into());
        return Ok(());
    }
    let command = match executable {
        Some(e) => format!("{e} -c {}", shlex_quote(&cmd)),
        None => cmd,
    };
    let run = act.call::<RunProcess>(
        &ProcTask {
            files: Vec::new(),
            command,
            tmp: None,
            env: Vec::new(),
            cwd: act.engine.cwd(target),
            timeout_ms: millis(task.timeout),
        },
        task.timeout + CALL_SLACK,
    )?;
    let run = act.engine.transport_view(target, run);
    act.s.data = raw_result(&run);
    Ok(())
}

pub(crate) fn command(act: &mut Act<'_>) -> Result<(), Error> {
    let mut a = task_args(act.task)?;
    if short_action(&act.task.name) == "shell" {
        a.insert("_uses_shell".into(), true.into());
    }
    normal(act, "ansible.legacy.command", a)
}

/// The normal action: one module, its result is the task's.
pub(crate) fn normal(
    act: &mut Act<'_>,
    name: &str,
    user_args: Map<String, Value>,
) -> Result<(), Error> {
    let opts = Exec {
        wrap_async: act.task.async_limit > 0,
        ..Exec::default()
    };
    act.s.data = act.engine.exec_module(act, name, user_args, &opts)?;
    Ok(())
}
