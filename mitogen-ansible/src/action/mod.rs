//! ansible-core's action plugins, reimplemented: what runs for a task
//! before, around and instead of its module (`plugins/action/*.py`),
//! dispatched by [`run`]. Each is built from the primitives in
//! [`crate::exec`] ([`Act`], [`Engine::exec_module`](crate::exec::Engine)).

mod assemble;
mod async_job;
mod copy;
mod fetch;
mod normal;
mod package;
mod script;
mod template;
pub use template::template_vars;

use crate::error::Error;
use crate::exec::{Act, failure, short_action, task_args};
use serde_json::{Map, Value};

/// Actions that may run async (`_supports_async`).
fn supports_async(action: &str) -> bool {
    !matches!(
        action,
        "copy" | "template" | "fetch" | "script" | "raw" | "async_status" | "assemble"
    )
}

/// Runs the task's action; the result is left in `act.s`.
pub(crate) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let task = act.task;
    let action = short_action(&task.name);
    if task.async_limit > 0 && !supports_async(action) {
        act.s.data = action_failure(&format!(
            "This action ({}) does not support async.",
            task.name
        ));
        return Ok(());
    }
    match action {
        "raw" => normal::raw(act)?,
        "command" | "shell" => normal::command(act)?,
        "copy" => copy::run(act)?,
        "assemble" => assemble::run(act)?,
        "template" => template::run(act)?,
        "fetch" => fetch::run(act)?,
        "script" => script::run(act)?,
        "async_status" => async_job::status_action(act)?,
        "package" => package::package(act)?,
        "service" => package::service(act)?,
        // Never a module run bare where ansible-core runs an action
        // plugin in front of it.
        _ if act.engine.source.unsupported_action(&task.name).is_some() => {
            return Err(Error::UnsupportedAction(task.name.clone()));
        }
        a => {
            let args = task_args(task)?;
            normal::normal(act, &task.name, args)?;
            if a == "setup" {
                act.s
                    .data
                    .insert("_ansible_verbose_override".into(), true.into());
            }
        }
    }
    if task.async_limit > 0 && task.poll > 0 {
        let d = &act.s.data;
        let truthy = |k: &str| {
            d.get(k)
                .is_some_and(|v| v.as_bool() != Some(false) && !v.is_null())
        };
        if !truthy("skipped") && !truthy("failed") {
            async_job::poll(act)?;
        }
    }
    Ok(())
}

/// An `AnsibleActionFail(msg)` raised by an action: the executor's shape
/// (unlike other errors, without the "Task failed: " prefix).
pub(crate) fn action_failure(msg: &str) -> Map<String, Value> {
    let mut m = failure(msg);
    m.insert("msg".into(), msg.into());
    m
}

/// `boolean(value, strict=False)`.
pub(crate) fn boolean(v: Option<&Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(Value::String(s)) => matches!(
            s.to_lowercase().as_str(),
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0"
        ),
        Some(_) => false,
    }
}
