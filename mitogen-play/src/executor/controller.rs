//! The actions the controller runs itself (ansible-core's action plugins
//! that never reach a target): `debug`, `set_fact`, `include_vars`,
//! `assert`, `fail`. Everything else goes to the runner ([`super::module`]).

use super::host::HostState;
use super::outcome::{NO_TRACEBACK, cond_error, error_outcome, finish_outcome};
use super::task_loop::strip_omit;
use super::{Executor, PlayCtx, abs, bool_val};
use crate::events::Outcome;
use crate::inventory::read_vars_file;
use crate::playbook::TaskDef;
use crate::template::Vars;
use mitogen_ansible::Status;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
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
    ("include_vars", include_vars),
    ("assert", assert),
    ("fail", fail),
];

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
        let args = match self.task_args(t, vars) {
            Ok(a) => strip_omit(a),
            Err(e) => return error_outcome(&e, no_log, false),
        };
        match controller_action(t.short_action()) {
            Some(action) => action(&Call {
                ex: self,
                ctx,
                t,
                h,
                vars,
                args: &args,
                no_log,
                delegated,
            }),
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
        return error_outcome(
            "Task failed: Action failed: parameters are mutually exclusive: msg|var",
            no_log,
            false,
        );
    }
    // ansible-core's `type='int'`: an int, or a string of one.
    let verbosity = match args.get("verbosity") {
        None => Some(0),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let Some(verbosity) = verbosity else {
        let v = args
            .get("verbosity")
            .map(Value::to_string)
            .unwrap_or_default();
        return error_outcome(
            &format!(
                "Task failed: Action failed: argument 'verbosity' is of type {} and we were unable to convert to int: {v}",
                mitogen_ansible::pycompat::py_type_name(&args["verbosity"])
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

/// `include_vars`: a vars file (role `vars/`, the task file's dir, the playbook's), stored as the host's facts.
fn include_vars(c: &Call<'_>) -> Outcome {
    let Call {
        ctx,
        t,
        h,
        args,
        no_log,
        ..
    } = *c;
    let f = args
        .get("_raw_params")
        .or_else(|| args.get("file"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut p = PathBuf::from(&f);
    if p.is_relative() {
        let mut cands = Vec::new();
        if let Some(r) = &t.role {
            cands.push(r.path.join("vars").join(&f));
        }
        cands.push(t.base.join("vars").join(&f));
        cands.push(t.base.join(&f));
        cands.push(ctx.play.base.join("vars").join(&f));
        cands.push(ctx.play.base.join(&f));
        p = cands
            .iter()
            .find(|c| c.is_file())
            .cloned()
            .unwrap_or_else(|| t.base.join(&f));
    }
    match read_vars_file(&p) {
        Ok(v) => {
            let v = match args.get("name").and_then(Value::as_str) {
                Some(n) => {
                    let mut m = Map::new();
                    m.insert(n.to_owned(), Value::Object(v));
                    m
                }
                None => v,
            };
            h.registered.lock().extend(v.clone());
            let mut m = Map::new();
            m.insert("ansible_facts".into(), Value::Object(v));
            m.insert(
                "ansible_included_var_files".into(),
                json!([abs(&p).display().to_string()]),
            );
            m.insert("changed".into(), false.into());
            // What a vault held is not shown (ansible-core
            // sets no_log for a vaulted file).
            let vaulted = mitogen_ansible::vault::is_encrypted_file(&p);
            finish_outcome(Status::Ok, m, no_log || vaulted)
        }
        Err(e) => error_outcome(&e.to_string(), no_log, false),
    }
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
