//! A task's result on one host ([`Outcome`]): the shapes ansible-core gives
//! skipped, failed and errored tasks, and the status worked out again
//! after `changed_when`/`failed_when`/`until` changed the register view.

use crate::events::{Outcome, Raised};
use crate::playbook::TaskDef;
use crate::template::{TemplateError, truthy};
use mitogen_ansible::Status;
use serde_json::{Map, Value};
use std::time::Duration;

pub(super) const NO_TRACEBACK: &str = "(traceback unavailable)";

/// ansible-core's words for a conditional that could not be evaluated
/// (`failed_when_result`, `changed_when_result`).
pub(super) fn when_error(e: &TemplateError) -> String {
    // A syntax error is raised as it is; anything else is wrapped.
    if e.0.starts_with("Syntax error in ") {
        return e.0.clone();
    }
    format!("Error while evaluating conditional: {e}")
}

/// The task failure for a `when:` or `assert` conditional that could not
/// be evaluated.
pub(super) fn cond_error(e: &TemplateError) -> String {
    format!("Task failed: {}", when_error(e))
}

pub(super) fn finish_outcome(status: Status, mut reg: Map<String, Value>, no_log: bool) -> Outcome {
    reg.entry("changed").or_insert(false.into());
    reg.insert("_ansible_no_log".into(), no_log.into());
    if status == Status::Failed {
        reg.insert("failed".into(), true.into());
    }
    if status == Status::Skipped {
        reg.insert("skipped".into(), true.into());
    }
    let changed = reg.get("changed").is_some_and(truthy);
    let callback = mitogen_ansible::callback_view(&reg, no_log);
    Outcome {
        status,
        changed,
        ignored: false,
        register: Value::Object(reg),
        callback,
        duration: Duration::ZERO,
        raised: Raised::Returned,
    }
}

pub(super) fn skipped_outcome(_t: &TaskDef, no_log: bool, conds: &[Value]) -> Outcome {
    let mut m = Map::new();
    m.insert("changed".into(), false.into());
    m.insert("skip_reason".into(), "Conditional result was False".into());
    if let Some(c) = conds.first() {
        if !c.is_null() {
            m.insert("false_condition".into(), c.clone());
        }
    }
    finish_outcome(Status::Skipped, m, no_log)
}

pub(super) fn error_outcome(msg: &str, no_log: bool, _ignore: bool) -> Outcome {
    let mut m = Map::new();
    m.insert("msg".into(), msg.into());
    m.insert("changed".into(), false.into());
    m.insert("exception".into(), NO_TRACEBACK.into());
    finish_outcome(Status::Failed, m, no_log)
}

/// The failure an action raised (`AnsibleActionFail`): `msg` as the
/// exception says it; `changed` when the action had its result started.
pub(super) fn raised_outcome(msg: &str, no_log: bool, changed: bool) -> Outcome {
    let mut out = error_outcome(msg, no_log, false);
    if !changed {
        out.remove("changed");
        if let Value::Object(c) = &mut out.callback {
            c.shift_remove("changed");
        }
    }
    out.raised = Raised::InTask;
    out
}

/// ansible-core's result for a loop that has no items to run: no
/// `changed`.
pub(super) fn no_items_outcome(msg: &str, no_log: bool) -> Outcome {
    let mut out = error_outcome(msg, no_log, false);
    out.raised = Raised::Bare;
    out.remove("changed");
    if let Value::Object(c) = &mut out.callback {
        c.shift_remove("changed");
    }
    out
}

impl Outcome {
    pub(super) fn set(&mut self, k: &str, v: Value) {
        if let Value::Object(m) = &mut self.register {
            m.insert(k.to_owned(), v);
        }
    }

    pub(super) fn set_default(&mut self, k: &str, v: Value) {
        if let Value::Object(m) = &mut self.register {
            m.entry(k.to_owned()).or_insert(v);
        }
    }

    pub(super) fn remove(&mut self, k: &str) {
        if let Value::Object(m) = &mut self.register {
            m.shift_remove(k);
        }
    }

    /// Status and callback view recomputed from the register view.
    pub(super) fn refresh(self, no_log: bool) -> Self {
        let Value::Object(m) = self.register else {
            return self;
        };
        let changed = m.get("changed").is_some_and(truthy);
        let status = if self.status == Status::Unreachable {
            Status::Unreachable
        } else {
            Status::of(&m)
        };
        let mut callback = mitogen_ansible::callback_view(&m, no_log);
        if let (Some(dv), Value::Object(c), false) =
            (m.get("_ansible_delegated_vars"), &mut callback, no_log)
        {
            c.insert("_ansible_delegated_vars".into(), dv.clone());
        }
        // What the callback saw that `register:` does not keep (the
        // module's `invocation`, `_ansible_no_log`): carried over, since the
        // register view is what changed here.
        if let (Value::Object(old), Value::Object(new)) = (&self.callback, &mut callback) {
            for (k, v) in old {
                if (k == "invocation" || k.starts_with("_ansible_")) && !new.contains_key(k) {
                    new.insert(k.clone(), v.clone());
                }
            }
        }
        Self {
            status,
            changed,
            ignored: self.ignored,
            register: Value::Object(m),
            callback,
            duration: self.duration,
            raised: self.raised,
        }
    }
}
