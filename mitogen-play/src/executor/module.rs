//! A task that runs on a target: the runner's [`Task`] built from the
//! keywords, the target (the host or its delegate) connected, the result's
//! facts stored where they belong.

use super::host::{HostState, TargetError};
use super::outcome::{error_outcome, finish_outcome};
use super::vars::OMIT;
use super::{Executor, PlayCtx};
use crate::events::Outcome;
use crate::playbook::{TaskDef, short};
use crate::template::{PlayHook, Vars, truthy};
use mitogen_ansible::{Status, Task};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn module(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        h: &Arc<HostState>,
        vars: &Vars,
        args: Value,
        no_log: bool,
        delegated: Option<&str>,
    ) -> Outcome {
        let check = self
            .kw_bool(&t.kw.check_mode, vars)
            .unwrap_or(self.opts.check);
        let diff = self.kw_bool(&t.kw.diff, vars).unwrap_or(self.opts.diff);
        // `async:`/`poll:` go to the runner, which runs the module under
        // ansible-core's own async_wrapper and polls as the executor does.
        let seconds = |x: &Option<Value>| {
            x.as_ref()
                .and_then(|x| self.templar.value(x, vars).ok())
                .and_then(|x| {
                    x.as_u64()
                        .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
                })
        };
        let async_limit = seconds(&t.async_).unwrap_or(0);
        // ansible-playbook's default poll interval is 10 s.
        let poll = seconds(&t.poll).unwrap_or(10);
        let mut action = t.action.clone();
        if matches!(short(&action), "gather_facts") {
            action = "ansible.builtin.setup".into();
        }
        // ansible-core's PYTHON_MODULE_RLIMIT_NOFILE, per host/task (`omit`:
        // unset); an undefined template fails the task.
        let rlimit_nofile = match vars.get("ansible_python_module_rlimit_nofile") {
            None | Some(Value::Null) => 0,
            Some(v) => match self.templar.value(v, vars) {
                Ok(Value::String(s)) if s == OMIT => 0,
                Ok(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .unwrap_or(0),
                Err(e) => return error_outcome(&format!("Task failed: {e}"), no_log, false),
            },
        };
        let mut task = Task::new(&action)
            .args(args)
            .check_mode(check)
            .diff(diff)
            .no_log(no_log)
            .rlimit_nofile(rlimit_nofile);
        if async_limit > 0 {
            task = task.async_limit(async_limit).poll(poll);
        }
        if matches!(short(&action), "package" | "service") {
            // What their action plugins read to pick the backend module.
            let mut m = Map::new();
            if let Some(f) = vars.get("ansible_facts") {
                let picked: Map<String, Value> = ["pkg_mgr", "service_mgr"]
                    .iter()
                    .filter_map(|k| f.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect();
                m.insert("ansible_facts".into(), picked.into());
            }
            if let Some(v) = vars.get("ansible_package_use") {
                m.insert("ansible_package_use".into(), v.clone());
            }
            task = task.vars(m);
        }
        // A template file sees the task's variables (templated on access,
        // `hostvars` too), its lookups and search paths; every action
        // finds its files (`copy`'s, `script`'s `src`) in the task's
        // search path: its roles' directories, then its own file's.
        task = task.template_hook(Arc::new(PlayHook::new(&self.templar, vars)));
        if let Some(to) = t
            .timeout
            .as_ref()
            .and_then(|x| self.templar.value(x, vars).ok())
            .and_then(|x| x.as_u64())
        {
            if to > 0 {
                task = task.timeout(Duration::from_secs(to));
            }
        }
        for e in &t.kw.environment {
            match self.templar.value(e, vars) {
                Ok(Value::Object(o)) => {
                    for (k, v) in o {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        task = task.env(&k, &v);
                    }
                }
                Ok(Value::Null) => {}
                Ok(other) => {
                    return error_outcome(
                        &format!("environment must be a dictionary, received {other}"),
                        no_log,
                        false,
                    );
                }
                Err(e) => return error_outcome(&e.to_string(), no_log, false),
            }
        }
        // Where it runs: the host, or the delegate's connection.
        let (target_host, tvars) = match delegated {
            Some(d) => {
                let dh = self.host(d);
                let dv = self.vars_for(ctx, t, &dh);
                (dh, dv)
            }
            _ => (h.clone(), vars.clone()),
        };
        let facts_to_delegate = self.facts_to_delegate(t, vars, delegated);
        let target = match self.target(t, &target_host, &tvars, &h.name) {
            // ansible-core leaves a delegate's discovered interpreter out of
            // the result unless its facts go to it.
            Ok(x) => x.discovery_fact(delegated.is_none() || facts_to_delegate),
            Err(TargetError::Unreachable(msg)) => {
                let mut m = Map::new();
                m.insert("unreachable".into(), true.into());
                m.insert("msg".into(), msg.into());
                m.insert("changed".into(), false.into());
                return finish_outcome(Status::Unreachable, m, no_log);
            }
            Err(TargetError::Failed(msg)) => return error_outcome(&msg, no_log, false),
        };
        match self.runner.run(target, &task) {
            Ok(r) => {
                let register = r.register.clone();
                if matches!(r.status, Status::Ok | Status::Changed) {
                    if let Some(Value::Object(f)) = register.get("ansible_facts") {
                        // A delegated task's facts are the inventory host's
                        // unless `delegate_facts`; the interpreter found on
                        // a context stays with the host it belongs to.
                        let owner = if facts_to_delegate { &target_host } else { h };
                        let (mut theirs, mut ctx_own) = (Map::new(), Map::new());
                        for (k, v) in f {
                            if k == "discovered_interpreter_python" {
                                ctx_own.insert(k.clone(), v.clone());
                            } else {
                                theirs.insert(k.clone(), v.clone());
                            }
                        }
                        // One host's lock at a time: two hosts delegating
                        // to each other must not wait on each other.
                        owner.facts.lock().extend(theirs);
                        target_host.facts.lock().extend(ctx_own);
                    }
                }
                let changed = register.get("changed").is_some_and(truthy);
                Outcome {
                    status: r.status,
                    changed,
                    ignored: false,
                    register,
                    callback: r.result,
                    duration: Duration::ZERO,
                    raised: crate::events::Raised::Returned,
                }
            }
            Err(e) => error_outcome(&e.to_string(), no_log, false),
        }
    }
}
