//! The actions the controller runs itself (ansible-core's action plugins
//! that never reach a target): `debug`, `set_fact`, `include_vars`,
//! `assert`, `fail`. Everything else goes to the runner ([`super::module`]).

use super::host::HostState;
use super::outcome::{NO_TRACEBACK, cond_error, error_outcome, finish_outcome, raised_outcome};
use super::task_loop::strip_omit;
use super::{Executor, PlayCtx, bool_val};
use crate::events::Outcome;
use crate::playbook::TaskDef;
use crate::template::Vars;
use mitogen_ansible::Status;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// ansible-core's `validate_variable_name`: an ASCII identifier that is
/// not one of Jinja's names (`true`, `None`, `not`, ...).
pub(super) fn valid_variable_name(k: &str) -> bool {
    let mut cs = k.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            k,
            "true" | "false" | "none" | "True" | "False" | "None" | "not"
        )
}

/// What a controller action gets: the task, the host, its variables and
/// the task's templated arguments.
pub(super) struct Call<'a> {
    pub(super) ex: &'a Executor,
    pub(super) ctx: &'a PlayCtx<'a>,
    pub(super) t: &'a TaskDef,
    pub(super) h: &'a Arc<HostState>,
    pub(super) vars: &'a Vars,
    pub(super) args: &'a Value,
    pub(super) no_log: bool,
    /// `delegate_to`, templated.
    pub(super) delegated: Option<&'a str>,
}

/// A controller action.
type Action = fn(&Call<'_>) -> Outcome;

/// The actions the controller runs itself, by short name: the one place
/// that says which (everything else runs on a target through the runner).
const ACTIONS: &[(&str, Action)] = &[
    ("debug", debug),
    ("set_fact", set_fact),
    ("include_vars", super::include_vars::include_vars),
    ("assert", assert),
    ("fail", fail),
    ("add_host", add_host),
    ("group_by", group_by),
];

/// Actions that run once per task, not once per host (ansible-core's
/// `BYPASS_HOST_LOOP`), for the first host of the batch.
pub(super) fn bypasses_host_loop(short_name: &str) -> bool {
    matches!(short_name, "add_host")
}

/// The controller action for a task's short action name, if it is one.
pub(super) fn controller_action(short_name: &str) -> Option<Action> {
    ACTIONS
        .iter()
        .find(|(n, _)| *n == short_name)
        .map(|(_, f)| *f)
}

impl Executor {
    /// Templated args, then the action: the controller's own, or the
    /// module's on a target.
    pub(super) fn execute(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        h: &Arc<HostState>,
        vars: &Vars,
        no_log: bool,
        delegated: Option<&str>,
    ) -> Outcome {
        if let Some(why) = &t.unsupported {
            return error_outcome(
                &format!("Task failed: {why}; the task was not run"),
                no_log,
                false,
            );
        }
        let args = match self.task_args(t, vars) {
            Ok(a) => strip_omit(a),
            Err(e) => return error_outcome(&e, no_log, false),
        };
        if args.get("_raw_params").is_some() && !crate::playbook::takes_raw_params(t.short_action())
        {
            return error_outcome(
                &format!(
                    "Task failed: Action '{}' does not support raw params.",
                    crate::playbook::fqcn(&t.action)
                ),
                no_log,
                false,
            );
        }
        match controller_action(t.short_action()) {
            Some(action) => {
                let mut out = action(&Call {
                    ex: self,
                    ctx,
                    t,
                    h,
                    vars,
                    args: &args,
                    no_log,
                    delegated,
                });
                // ansible-core's TaskExecutor: a result that ran says
                // whether it failed.
                if out.status != Status::Skipped {
                    out.set_default("failed", (out.status == Status::Failed).into());
                }
                // Its failure normalized (`AnsibleActionCapturedError`),
                // with the message shown for one that has none.
                if out.status == Status::Failed {
                    out.set_default("exception", NO_TRACEBACK.into());
                    if out.register.get("msg").is_none() {
                        out.set("msg", "Task failed: Action failed: Unknown error.".into());
                        out = out.refresh(no_log);
                    }
                }
                out
            }
            None => self.module(ctx, t, h, vars, args, no_log, delegated),
        }
    }
}

/// `debug`: `msg`, or `var` rendered as ansible-core shows it.
fn debug(c: &Call<'_>) -> Outcome {
    let Call {
        ex,
        vars,
        args,
        no_log,
        ..
    } = *c;
    let mut m = Map::new();
    if args.get("msg").is_some() && args.get("var").is_some() {
        return raised_outcome("parameters are mutually exclusive: msg|var", no_log, false);
    }
    // ansible-core's `type='int'`: an int, or a string of one.
    let verbosity = match args.get("verbosity") {
        None => Some(0),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let Some(verbosity) = verbosity else {
        let v = &args["verbosity"];
        return raised_outcome(
            &format!(
                "argument 'verbosity' is of type {} and we were unable to convert to int: \"{}\" cannot be converted to an int",
                mitogen_ansible::pycompat::py_type_name(v),
                mitogen_ansible::pycompat::py_repr(v),
            ),
            no_log,
            false,
        );
    };
    if verbosity > i64::from(ex.opts.verbosity) {
        m.insert(
            "skipped_reason".into(),
            "Verbosity threshold not met.".into(),
        );
        m.insert("skipped".into(), true.into());
        m.insert("changed".into(), false.into());
        return finish_outcome(Status::Skipped, m, no_log);
    }
    if let Some(var) = args.get("var") {
        let name = var.as_str().map_or_else(|| var.to_string(), str::to_owned);
        let v = match ex.templar.debug_var(&name, vars) {
            Ok(v) => v,
            Err(e) => {
                return error_outcome(
                    &format!("Task failed: Error while resolving `var` expression: {e}"),
                    no_log,
                    false,
                );
            }
        };
        m.insert(name, v);
    } else {
        m.insert(
            "msg".into(),
            args.get("msg")
                .cloned()
                .unwrap_or_else(|| "Hello world!".into()),
        );
    }
    m.insert("_ansible_verbose_always".into(), true.into());
    m.insert("changed".into(), false.into());
    finish_outcome(Status::Ok, m, no_log)
}

/// `set_fact`: keys templated and checked, the facts stored on the host (or, with `delegate_facts`, its delegate).
fn set_fact(c: &Call<'_>) -> Outcome {
    let Call {
        ex,
        t,
        h,
        vars,
        args,
        no_log,
        delegated,
        ..
    } = *c;
    let Value::Object(mut o) = args.clone() else {
        return error_outcome("set_fact takes key=value arguments", no_log, false);
    };
    o.shift_remove("cacheable");
    if o.is_empty() {
        return error_outcome(
            "No key/value pairs provided, at least one is required for this action to succeed",
            no_log,
            false,
        );
    }
    // ansible-core templates set_fact's keys (and only its),
    // then checks each is a variable name.
    let mut named = Map::new();
    for (k, v) in o {
        let k = match ex.templar.string(&k, vars) {
            Ok(k) => k,
            Err(e) => {
                return error_outcome(&format!("Task failed: {e}"), no_log, false);
            }
        };
        if !valid_variable_name(&k) {
            return error_outcome(
                &format!(
                    "Task failed: Invalid variable name {}.",
                    mitogen_ansible::pycompat::py_repr(&Value::String(k))
                ),
                no_log,
                false,
            );
        }
        named.insert(k, v);
    }
    let o = named;
    // `delegate_facts`: the delegate gets them.
    let owner = match delegated {
        Some(d) if ex.facts_to_delegate(t, vars, delegated) => ex.host(d),
        _ => h.clone(),
    };
    owner.registered.lock().extend(o.clone());
    let mut m = Map::new();
    m.insert("ansible_facts".into(), Value::Object(o));
    m.insert("changed".into(), false.into());
    finish_outcome(Status::Ok, m, no_log)
}

/// `fail`: fails with `msg`.
fn fail(c: &Call<'_>) -> Outcome {
    let Call { args, no_log, .. } = *c;
    let mut m = Map::new();
    m.insert(
        "msg".into(),
        args.get("msg")
            .cloned()
            .unwrap_or_else(|| "Failed as requested from task".into()),
    );
    m.insert("changed".into(), false.into());
    m.insert("failed".into(), true.into());
    m.insert("exception".into(), NO_TRACEBACK.into());
    finish_outcome(Status::Failed, m, no_log)
}

/// `assert`: every `that` true, else failed with `fail_msg`.
fn assert(c: &Call<'_>) -> Outcome {
    let Call {
        ex,
        vars,
        args,
        no_log,
        ..
    } = *c;
    let that = match args.get("that") {
        Some(Value::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => return error_outcome("conditional required in \"that\" string", no_log, false),
    };
    let quiet = args.get("quiet").is_some_and(bool_val);
    let fail_msg = args.get("fail_msg").or_else(|| args.get("msg")).cloned();
    let mut m = Map::new();
    for c in &that {
        match ex.templar.cond(c, vars) {
            Ok(true) => {}
            Ok(false) => {
                m.insert("evaluated_to".into(), false.into());
                m.insert("assertion".into(), c.clone());
                m.insert(
                    "msg".into(),
                    fail_msg.unwrap_or_else(|| "Assertion failed".into()),
                );
                m.insert("changed".into(), false.into());
                m.insert("failed".into(), true.into());
                m.insert("exception".into(), NO_TRACEBACK.into());
                if !quiet {
                    m.insert("_ansible_verbose_always".into(), true.into());
                }
                return finish_outcome(Status::Failed, m, no_log);
            }
            Err(e) => return error_outcome(&cond_error(&e), no_log, false),
        }
    }
    if !quiet {
        m.insert("_ansible_verbose_always".into(), true.into());
    }
    m.insert("changed".into(), false.into());
    m.insert(
        "msg".into(),
        args.get("success_msg")
            .cloned()
            .unwrap_or_else(|| "All assertions passed".into()),
    );
    finish_outcome(Status::Ok, m, no_log)
}

/// An action's raised failure (`AnsibleActionFail`) once its result was
/// started, as ansible-core reports it.
fn action_fail(msg: &str, no_log: bool) -> Outcome {
    raised_outcome(msg, no_log, true)
}

/// `add_host`: a host (and its groups) joins the in-memory inventory, for
/// the rest of the run (ansible-core's action and `add_dynamic_host`).
fn add_host(c: &Call<'_>) -> Outcome {
    let Call {
        ex,
        ctx,
        args,
        no_log,
        ..
    } = *c;
    let Some(args) = args.as_object() else {
        return action_fail(
            "Invalid raw parameters passed, requires a dictionary/mapping",
            no_log,
        );
    };
    let mut args = args.clone();
    match args.shift_remove("_raw_params") {
        // `add_host: "{{ x }}"`: the mapping, under the other arguments.
        Some(Value::Object(raw)) => {
            let own = std::mem::replace(&mut args, raw);
            args.extend(own);
        }
        None => {}
        // The class ansible-core 2.19 names for a playbook's string.
        Some(_) => {
            return action_fail(
                "Invalid raw parameters passed, requires a dictionary/mapping got a  <class 'ansible.module_utils._internal._datatag._AnsibleTaggedStr'>",
                no_log,
            );
        }
    }
    let Some(new_name) = ["name", "hostname", "host"]
        .iter()
        .find_map(|k| args.get(*k).filter(|v| !v.is_null()))
    else {
        return action_fail("name, host or hostname needs to be provided", no_log);
    };
    let new_name = new_name
        .as_str()
        .map_or_else(|| new_name.to_string(), str::to_owned);
    let (name, port) = parse_address(&new_name);
    if let Some(port) = port {
        args.insert("ansible_ssh_port".into(), port.into());
    }
    let groups = match ["groupname", "groups", "group"]
        .iter()
        .find_map(|k| args.get(*k).filter(|v| !v.is_null()))
    {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(mitogen_ansible::pycompat::py_str).collect(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(_) => return action_fail("Groups must be specified as a list.", no_log),
    };
    let mut new_groups: Vec<String> = Vec::new();
    for g in groups {
        let g = g.trim().to_owned();
        if !new_groups.contains(&g) {
            new_groups.push(g);
        }
    }
    let host_vars: Map<String, Value> = args
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "hostname" | "groupname" | "groups"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = ex
        .inventory
        .lock()
        .add_dynamic_host(&name, &new_groups, &host_vars);
    let mut m = Map::new();
    m.insert(
        "add_host".into(),
        json!({"host_name": name, "groups": new_groups, "host_vars": host_vars}),
    );
    inventory_outcome(ctx, changed, m, no_log)
}

/// The result of a task that changed the inventory (`changed`: it did):
/// later tasks see the new `groups`.
fn inventory_outcome(
    ctx: &PlayCtx<'_>,
    changed: bool,
    mut m: Map<String, Value>,
    no_log: bool,
) -> Outcome {
    if changed {
        ctx.src.refresh_groups();
    }
    m.insert("changed".into(), changed.into());
    let status = if changed { Status::Changed } else { Status::Ok };
    finish_outcome(status, m, no_log)
}

/// ansible-core's `parse_address` (no ranges): `host`, `host:port`,
/// `[v6]:port`; anything else is the name as it is.
fn parse_address(s: &str) -> (String, Option<u64>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host.to_owned(), port);
        }
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') && !port.is_empty() => match port.parse() {
            Ok(p) => (host.to_owned(), Some(p)),
            Err(_) => (s.to_owned(), None),
        },
        _ => (s.to_owned(), None),
    }
}

/// `group_by`: the host joins the group `key` names (ansible-core's
/// action and `add_dynamic_group`), a child of `parents` (default `all`).
fn group_by(c: &Call<'_>) -> Outcome {
    let Call {
        ex,
        ctx,
        h,
        args,
        no_log,
        ..
    } = *c;
    let Some(key) = args.get("key").filter(|v| !v.is_null()) else {
        let mut m = Map::new();
        m.insert("failed".into(), true.into());
        m.insert(
            "msg".into(),
            "the 'key' param is required when using group_by".into(),
        );
        return finish_outcome(Status::Failed, m, no_log);
    };
    let dash = |v: &Value| mitogen_ansible::pycompat::py_str(v).replace(' ', "-");
    let group = dash(key);
    let parents: Vec<String> = match args.get("parents") {
        None | Some(Value::Null) => vec!["all".into()],
        Some(Value::Array(a)) => a.iter().map(dash).collect(),
        Some(v) => vec![dash(v)],
    };
    let changed = ex
        .inventory
        .lock()
        .add_dynamic_group(&h.name, &group, &parents);
    let mut m = Map::new();
    m.insert("add_group".into(), group.into());
    m.insert("parent_groups".into(), parents.into());
    inventory_outcome(ctx, changed, m, no_log)
}
