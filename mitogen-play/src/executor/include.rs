//! `include_tasks` and `include_role` at run time: each host's (each
//! item's) result first, then what it includes, for the hosts that did.

use super::host::HostState;
use super::outcome::{error_outcome, finish_outcome, skipped_outcome};
use super::{Executor, PlayCtx};
use crate::events::{Event, Outcome};
use crate::playbook::{self, TaskDef, raw_param};
use crate::template::Vars;
use mitogen_ansible::Status;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// What one include brings in (a file, or the role when `None`), for
/// which hosts, with which item's loop variables.
pub(super) struct IncludeGroup {
    file: Option<PathBuf>,
    vars: Map<String, Value>,
    hosts: Vec<Arc<HostState>>,
}

/// The loop variables `looped` set for this item (what an included file's
/// tasks see of their include's loop).
pub(super) fn loop_vars(t: &TaskDef, iv: &Vars) -> Map<String, Value> {
    let index_var = t.loop_control.get("index_var").and_then(Value::as_str);
    let keys = [
        Some(t.loop_var()),
        Some("ansible_loop_var"),
        index_var,
        index_var.map(|_| "ansible_index_var"),
        Some("ansible_loop"),
    ];
    let mut m = Map::new();
    for k in keys.into_iter().flatten() {
        if let Some(v) = iv.get(k) {
            m.insert(k.to_owned(), v.clone());
        }
    }
    m
}

impl Executor {
    /// `include_tasks` and `include_role`, looped or not: each host's
    /// result first, then every included file (or the role), in the order
    /// first met, for the hosts (and items) that included it.
    pub(super) fn include(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
        let groups: Mutex<Vec<IncludeGroup>> = Mutex::new(Vec::new());
        for h in hosts {
            let vars = self.vars_for(ctx, t, h);
            let display = self.display_name(t, h, ctx);
            self.task_start(ctx, t, &display, false);
            let plain = self.plain_name(t, h, ctx);
            let out =
                match &t.loop_ {
                    Some((src, kind)) => {
                        self.looped(t, &vars, src, kind, false, &|iv: &Vars| match self
                            .when_ok(t, iv)
                        {
                            Ok(true) => self.include_one(t, h, iv, &groups, loop_vars(t, iv)),
                            Ok(false) => skipped_outcome(t, false, &[self.first_false(t, iv)]),
                            Err(e) => error_outcome(&e, false, false),
                        })
                    }
                    None => match self.when_ok(t, &vars) {
                        Ok(true) => self.include_one(t, h, &vars, &groups, Map::new()),
                        Ok(false) => skipped_outcome(
                            t,
                            false,
                            &t.kw.when.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                        ),
                        Err(e) => error_outcome(&e, false, self.ignore_errors(t, &vars)),
                    },
                };
            let name = if out.status == Status::Ok {
                &plain
            } else {
                &display
            };
            self.account(ctx, t, h, &out, name, None);
        }
        let groups = groups.into_inner();
        // Every include is announced before any of them runs, as
        // ansible-core's strategy sends them.
        for g in &groups {
            let file = match &g.file {
                Some(p) => super::abs(p).display().to_string(),
                None => raw_param(&t.args)
                    .or_else(|| {
                        t.args
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_default(),
            };
            self.emit(Event::Included {
                file,
                hosts: g.hosts.iter().map(|h| h.name.clone()).collect(),
                item: t
                    .loop_
                    .as_ref()
                    .and_then(|_| g.vars.get(t.loop_var()))
                    .map(mitogen_ansible::pycompat::py_str),
            });
        }
        for g in groups {
            // ansible-core's `_load_included_file`: ok once per host for
            // every file (or role) included, once it loaded.
            let count_ok = || {
                for h in &g.hosts {
                    h.stats.lock().ok += 1;
                }
            };
            let layer = Arc::new(g.vars);
            for h in &g.hosts {
                h.include_vars.lock().push(layer.clone());
            }
            match (&g.file, &t.included) {
                (None, Some(items)) => {
                    count_ok();
                    self.linear_items(ctx, items, &g.hosts);
                }
                (None, None) => {}
                (Some(p), _) => {
                    let mut kw = t.kw.clone();
                    kw.when.clear();
                    // Tasks a role includes at run time (a handler's
                    // include_tasks too) run even once the role completed:
                    // ansible-core skips only the role's own iterated tasks.
                    let role = t.role.as_ref().map(|r| {
                        Arc::new(playbook::Role {
                            allow_duplicates: true,
                            ..(**r).clone()
                        })
                    });
                    match playbook::load_task_file(p, &kw, role, &self.parse, &ctx.play.base) {
                        Ok((items, handlers)) => {
                            count_ok();
                            ctx.handlers.lock().extend(handlers);
                            self.linear_items(ctx, &items, &g.hosts);
                        }
                        Err(e) => {
                            let display = self.display_name(t, &g.hosts[0], ctx);
                            for h in &g.hosts {
                                let out = error_outcome(&e.to_string(), false, false);
                                self.account(ctx, t, h, &out, &display, None);
                            }
                        }
                    }
                }
            }
            for h in &g.hosts {
                h.include_vars.lock().pop();
            }
        }
    }

    /// One host's (one item's) include: its result, and the host added to
    /// the group of what it includes.
    pub(super) fn include_one(
        &self,
        t: &TaskDef,
        h: &Arc<HostState>,
        vars: &Vars,
        groups: &Mutex<Vec<IncludeGroup>>,
        item_vars: Map<String, Value>,
    ) -> Outcome {
        let args = self
            .templar
            .value(&t.args, vars)
            .unwrap_or_else(|_| t.args.clone());
        let mut m = Map::new();
        let file = if t.included.is_some() {
            m.insert("include_args".into(), args);
            None
        } else {
            let f = raw_param(&t.args)
                .or_else(|| {
                    t.args
                        .get("file")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let f = match self.templar.string(&f, vars) {
                Ok(f) => f,
                Err(e) => return error_outcome(&e.to_string(), false, false),
            };
            m.insert("include".into(), f.clone().into());
            let mut ia = args.as_object().cloned().unwrap_or_default();
            ia.shift_remove("_raw_params");
            ia.shift_remove("file");
            m.insert("include_args".into(), Value::Object(ia));
            Some(playbook::resolve_task_file(t, &f))
        };
        let mut gs = groups.lock();
        match gs
            .iter_mut()
            .find(|g| g.file == file && g.vars == item_vars)
        {
            Some(g) => g.hosts.push(h.clone()),
            None => gs.push(IncludeGroup {
                file,
                vars: item_vars,
                hosts: vec![h.clone()],
            }),
        }
        let mut out = finish_outcome(Status::Ok, m, false);
        if t.loop_.is_some() {
            // An included item's result has no `changed` of its own.
            out.remove("changed");
        }
        out
    }
}
