//! One task on one host: `when`, the loop (`loop`, `with_*`,
//! `loop_control`), `until`/`retries`, `changed_when`/`failed_when`,
//! `register`, the arguments templated.

use super::host::HostState;
use super::outcome::{
    NO_TRACEBACK, error_outcome, finish_outcome, no_items_outcome, skipped_outcome, when_error,
};
use super::vars::OMIT;
use super::{Executor, PlayCtx, bool_val};
use crate::events::{Event, Outcome};
use crate::playbook::TaskDef;
use crate::template::Vars;
use mitogen_ansible::Status;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn strip_omit(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(_, v)| v.as_str() != Some(OMIT))
                .map(|(k, v)| (k, strip_omit(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|v| v.as_str() != Some(OMIT))
                .map(strip_omit)
                .collect(),
        ),
        v => v,
    }
}

impl Executor {
    /// Runs `t` on one host (loop, when, until, changed/failed_when, register).
    pub(super) fn run_on_host(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        h: &Arc<HostState>,
    ) -> (Outcome, Option<String>) {
        let vars = self.vars_for(ctx, t, h);
        let no_log = self.kw_bool(&t.kw.no_log, &vars).unwrap_or(false);
        let ignore = self.ignore_errors(t, &vars);
        let ignore_unreachable = self
            .kw_bool(&t.kw.ignore_unreachable, &vars)
            .unwrap_or(false);
        let delegated =
            t.kw.delegate_to
                .as_ref()
                .and_then(|d| self.templar.value(d, &vars).ok())
                .and_then(|d| d.as_str().map(str::to_owned));
        if let Some(d) = &delegated {
            // `delegate_to: localhost` without such a host in the
            // inventory: ansible-core's implicit localhost (local
            // connection, the controller's Python), never ssh to it.
            self.inventory.lock().implicit_localhost(d);
        }
        let mut out = match &t.loop_ {
            None => match self.when_ok(t, &vars) {
                Ok(true) => self.one(ctx, t, h, &vars, no_log, delegated.as_deref()),
                Ok(false) => skipped_outcome(t, no_log, &[self.first_false(t, &vars)]),
                Err(e) => error_outcome(&e, no_log, ignore),
            },
            Some((src, kind)) => self.looped(t, &vars, src, kind, no_log, &|iv: &Vars| match self
                .when_ok(t, iv)
            {
                Ok(true) => self.one(ctx, t, h, iv, no_log, delegated.as_deref()),
                Ok(false) => skipped_outcome(t, no_log, &[self.first_false(t, iv)]),
                Err(e) => error_outcome(&e, no_log, false),
            }),
        };
        out.ignored = match out.status {
            Status::Failed => ignore,
            Status::Unreachable => ignore_unreachable,
            _ => false,
        };
        if let Some(reg) = &t.register {
            // The strategy's `strip_internal_keys`, at the top level.
            let mut v = out.register.clone();
            if let Value::Object(m) = &mut v {
                m.retain(|k, _| !k.starts_with("_ansible_"));
            }
            h.registered.lock().insert(reg.clone(), v);
        }
        (out, delegated)
    }

    /// A loop: `run` once per item with the item's variables (the loop
    /// and index variables, `ansible_loop` when extended), results shaped
    /// as ansible-core's `_run_loop` shapes them.
    pub(super) fn looped(
        &self,
        t: &TaskDef,
        vars: &Vars,
        src: &Value,
        kind: &str,
        no_log: bool,
        run: &dyn Fn(&Vars) -> Outcome,
    ) -> Outcome {
        let items = if let Some(name) = kind.strip_prefix("with_") {
            // `with_<lookup>`: the lookup's list, run as ansible-core's
            // `_get_loop_items` does (terms templated, one term a list).
            let cx = crate::lookup::Ctx {
                templar: &self.templar,
                vars,
                depth: 0,
                with_action: Some(&t.action),
            };
            let terms = match self.templar.value(src, vars) {
                Ok(t) => t,
                Err(e) => return error_outcome(&format!("Task failed: {e}"), no_log, false),
            };
            match crate::lookup::run_with(name, terms, &cx) {
                Ok(items) => items,
                Err(e) => return no_items_outcome(&e, no_log),
            }
        } else {
            match self.templar.value(src, vars) {
                Ok(Value::Array(a)) => a,
                Ok(other) => {
                    return no_items_outcome(
                        &format!(
                            "The `loop` value must resolve to a 'list', not '{}'.",
                            mitogen_ansible::pycompat::py_type_name(&other)
                        ),
                        no_log,
                    );
                }
                Err(e) => return error_outcome(&format!("Task failed: {e}"), no_log, false),
            }
        };
        let lc = &t.loop_control;
        let loop_var = t.loop_var().to_owned();
        let index_var = lc
            .get("index_var")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let pause = lc.get("pause").and_then(Value::as_f64).unwrap_or(0.0);
        let extended = lc.get("extended").is_some_and(bool_val);
        let allitems = lc.get("extended_allitems").is_none_or(bool_val);
        let mut results = Vec::new();
        let mut hoisted: std::collections::BTreeMap<&str, Vec<Value>> =
            std::collections::BTreeMap::new();
        let (mut changed, mut failed, mut all_skipped) = (false, false, true);
        let n = items.len();
        for (i, item) in items.iter().enumerate() {
            if i > 0 && pause > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(pause.min(3600.0)));
            }
            let mut iv = vars.clone();
            iv.push_one("ansible_loop_var", loop_var.clone().into());
            // An item is what the loop's source rendered to: not
            // templated again.
            iv.push_one_untrusted(&loop_var, item.clone());
            if let Some(ix) = &index_var {
                iv.push_one("ansible_index_var", ix.clone().into());
                iv.push_one(ix, i.into());
            }
            let extended_vars = extended.then(|| {
                let mut l = json!({"index": i + 1, "index0": i, "first": i == 0,
                    "last": i + 1 == n, "length": n, "revindex": n - i, "revindex0": n - i - 1});
                if allitems {
                    l["allitems"] = Value::Array(items.clone());
                }
                if let Some(next) = items.get(i + 1) {
                    l["nextitem"] = next.clone();
                }
                if i > 0 {
                    l["previtem"] = items[i - 1].clone();
                }
                l
            });
            if let Some(l) = &extended_vars {
                iv.push_one("ansible_loop", l.clone());
            }
            let mut o = run(&iv);
            let label = match lc.get("label") {
                Some(l) => self.templar.value(l, &iv).unwrap_or_else(|_| item.clone()),
                None => item.clone(),
            };
            let include = matches!(t.short_action(), "include_tasks" | "include_role");
            if let Value::Object(m) = &mut o.register {
                m.insert(loop_var.clone(), item.clone());
                m.insert("ansible_loop_var".into(), loop_var.clone().into());
                if let Some(ix) = &index_var {
                    m.insert(ix.clone(), i.into());
                    m.insert("ansible_index_var".into(), ix.clone().into());
                }
                if let Some(l) = extended_vars {
                    m.insert("ansible_loop".into(), l);
                }
                m.insert("_ansible_item_label".into(), label);
                if o.status != Status::Skipped && !include {
                    m.entry("failed").or_insert(false.into());
                }
            }
            // Items' warnings and deprecations move up to the loop's dict.
            if let Value::Object(m) = &mut o.register {
                for k in ["warnings", "deprecations"] {
                    if let Some(Value::Array(w)) = m.shift_remove(k) {
                        for x in w {
                            let list = hoisted.entry(k).or_default();
                            if !list.contains(&x) {
                                list.push(x);
                            }
                        }
                    }
                }
            }
            changed |= o.changed;
            failed |= o.status == Status::Failed;
            all_skipped &= o.status == Status::Skipped;
            // An item in `results` is what the callback saw of it: the
            // module's `invocation` and `_ansible_no_log` included.
            if let (Value::Object(m), Value::Object(c)) = (&mut o.register, &o.callback) {
                for (k, v) in c {
                    if (k == "invocation" || k == "_ansible_no_log") && !m.contains_key(k) {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            results.push(o.register);
        }
        let mut reg = Map::new();
        reg.insert("results".into(), Value::Array(results));
        if changed {
            reg.insert("changed".into(), true.into());
        }
        reg.insert("skipped".into(), all_skipped.into());
        if failed {
            reg.insert("failed".into(), true.into());
            reg.insert("msg".into(), "One or more items failed".into());
        } else {
            reg.insert("msg".into(), "All items completed".into());
        }
        // ansible-core's TaskExecutor: no items is `skipped_reason` alone;
        // every item skipped is `msg`.
        if n == 0 {
            reg.shift_remove("msg");
            reg.insert("skipped_reason".into(), "No items in the list".into());
        } else if all_skipped {
            reg.insert("msg".into(), "All items skipped".into());
        }
        reg.entry("changed").or_insert(false.into());
        reg.insert("_ansible_no_log".into(), no_log.into());
        for (k, v) in hoisted {
            reg.insert(k.into(), Value::Array(v));
        }
        let status = Status::of(&reg);
        let mut out = finish_outcome(status, reg, no_log);
        if !no_log {
            // The loop's own dict carries no `_ansible_no_log` (its items do).
            out.remove("_ansible_no_log");
            if let Value::Object(c) = &mut out.callback {
                c.shift_remove("_ansible_no_log");
            }
        }
        out
    }

    /// One execution (one item): args templated, action run, until,
    /// changed_when / failed_when.
    pub(super) fn one(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        h: &Arc<HostState>,
        vars: &Vars,
        no_log: bool,
        delegated: Option<&str>,
    ) -> Outcome {
        let retries = t
            .retries
            .as_ref()
            .and_then(|r| self.templar.value(r, vars).ok())
            .and_then(|r| {
                r.as_u64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            });
        let delay = t
            .delay
            .as_ref()
            .and_then(|r| self.templar.value(r, vars).ok())
            .and_then(|r| {
                r.as_f64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(5.0);
        let attempts_max = if t.until.is_some() {
            retries.unwrap_or(3) + 1
        } else {
            1
        };
        // Every delegated task's result says where it ran, the controller's
        // own actions' too (TaskExecutor._execute).
        let delegated_vars = delegated.map(|d| self.delegated_vars(ctx, t, d));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut out = self.execute(ctx, t, h, vars, no_log, delegated);
            if let Some(dv) = &delegated_vars {
                out.set("_ansible_delegated_vars", dv.clone());
                if let Value::Object(c) = &mut out.callback {
                    c.insert("_ansible_delegated_vars".into(), dv.clone());
                }
            }
            Self::add_warnings(&mut out, vars);
            if out.status == Status::Unreachable {
                return out;
            }
            // ansible-core makes `attempts` available to changed_when and
            // failed_when when the task retries.
            if t.until.is_some() && attempts_max > 1 {
                out.set("attempts", attempt.into());
            }
            let mut rv = vars.clone();
            if let Some(reg) = &t.register {
                rv.push_one_untrusted(reg, out.register.clone());
            }
            // ansible-core's `_execute`: a conditional that fails leaves
            // the result, failed, with the error as `<cond>_when_result`.
            if let Some(cw) = &t.changed_when {
                match self.templar.cond(cw, &rv) {
                    Ok(c) => {
                        out.set("changed", c.into());
                    }
                    Err(e) => {
                        out.set("changed_when_result", when_error(&e).into());
                        out.set("failed", true.into());
                        out.set_default("exception", NO_TRACEBACK.into());
                        return out.refresh(no_log);
                    }
                }
            }
            if let Some(fw) = &t.failed_when {
                let (f, why) = match self.templar.cond(fw, &rv) {
                    Ok(f) => (f, Value::from(f)),
                    Err(e) => (true, when_error(&e).into()),
                };
                out.set("failed_when_result", why);
                out.set("failed", f.into());
                if f {
                    out.set_default("exception", NO_TRACEBACK.into());
                }
            }
            if let Some(u) = &t.until {
                let mut uv = vars.clone();
                if let Some(reg) = &t.register {
                    uv.push_one_untrusted(reg, out.register.clone());
                }
                out.set("attempts", attempt.into());
                let done = self.templar.cond(u, &uv).unwrap_or(false);
                if done || attempt >= attempts_max {
                    if !done {
                        // ansible-core, out of attempts: `attempts` is the
                        // number of retries (one less than the runs).
                        out.set("attempts", (attempts_max - 1).into());
                        out.set("failed", true.into());
                        out.set_default("msg", "Task failed: Module failed: ".into());
                        out.set_default("exception", NO_TRACEBACK.into());
                    }
                    return out.refresh(no_log);
                }
                self.emit(Event::Retry {
                    host: h.name.clone(),
                    task: self.plain_name(t, h, ctx),
                    retries_left: attempts_max.saturating_sub(attempt),
                });
                std::thread::sleep(Duration::from_secs_f64(delay.clamp(0.0, 3600.0)));
                continue;
            }
            return out.refresh(no_log);
        }
    }

    /// Adds the warnings templating recorded (a lookup's `errors='warn'`)
    /// to the result.
    pub(super) fn add_warnings(out: &mut Outcome, vars: &Vars) {
        let warnings = vars.take_warnings();
        if warnings.is_empty() {
            return;
        }
        for view in [&mut out.register, &mut out.callback] {
            if let Value::Object(m) = view {
                let w = m.entry("warnings").or_insert_with(|| json!([]));
                if let Value::Array(list) = w {
                    list.extend(warnings.iter().cloned().map(Value::from));
                }
            }
        }
    }

    /// The task's arguments templated (with those given as templates, as
    /// ansible-core's `TaskArgsFinalizer` layers them), a failure as
    /// ansible-core words it
    /// (`Error while resolving value for '<argument>'`).
    pub(super) fn task_args(&self, t: &TaskDef, vars: &Vars) -> Result<Value, String> {
        let action = crate::playbook::fqcn(&t.action);
        let head = format!("Task failed: Finalization of task args for '{action}' failed");
        // module_defaults for this module (keys by FQCN or short name;
        // inner ones win), below the task's own arguments.
        let fqcn = |a: &str| match a.strip_prefix("ansible.legacy.") {
            Some(x) => format!("ansible.builtin.{x}"),
            None if !a.contains('.') => format!("ansible.builtin.{a}"),
            None => a.to_owned(),
        };
        // ansible-core merges the dicts by module (`dict.update`): an inner
        // `debug: {}` replaces, and so clears, what an outer one gave.
        let mut defaults = Map::new();
        for d in &t.kw.module_defaults {
            for (k, v) in d {
                if fqcn(k) == fqcn(&t.action) {
                    defaults = v.as_object().cloned().unwrap_or_default();
                }
            }
        }
        let with_defaults;
        let args = if defaults.is_empty() {
            &t.args
        } else {
            let mut m = defaults;
            match &t.args {
                Value::Object(o) => m.extend(o.iter().map(|(a, b)| (a.clone(), b.clone()))),
                Value::String(s) => {
                    m.insert("_raw_params".into(), Value::String(s.clone()));
                }
                _ => {}
            }
            with_defaults = Value::Object(m);
            &with_defaults
        };
        let Value::Object(o) = args else {
            return self
                .templar
                .value(args, vars)
                .map_err(|e| format!("{head}: {e}"));
        };
        let mut m = Map::new();
        for (k, v) in o {
            let x = self
                .templar
                .value(v, vars)
                .map_err(|e| format!("{head}: Error while resolving value for '{k}': {e}"))?;
            m.insert(k.clone(), x);
        }
        if t.arg_templates.is_empty() {
            return Ok(Value::Object(m));
        }
        // Arguments given as templates: each must render to a mapping; the
        // task's own arguments win over them, and they over module_defaults
        // (which `m` holds under the task's own).
        let own: Map<String, Value> = match &t.args {
            Value::Object(o) => o
                .keys()
                .filter_map(|k| Some((k.clone(), m.get(k)?.clone())))
                .collect(),
            _ => Map::new(),
        };
        for src in &t.arg_templates {
            self.emit(Event::Warning(format!(
                "Using a template for task args is unsafe in some situations (see {ARGSPLAT_FAQ})."
            )));
            match self.templar.value(&Value::String(src.clone()), vars) {
                Ok(Value::Object(layer)) => m.extend(layer),
                Ok(other) => {
                    return Err(format!(
                        "{head}: Task args must resolve to a 'dict' not '{}'.",
                        mitogen_ansible::pycompat::py_type_name(&other)
                    ));
                }
                Err(e) => return Err(format!("{head}: {e}")),
            }
        }
        m.extend(own);
        Ok(Value::Object(m))
    }
}

/// Where ansible-core's warning about templated task args points.
const ARGSPLAT_FAQ: &str =
    "https://docs.ansible.com/ansible/devel/reference_appendices/faq.html#argsplat-unsafe";
