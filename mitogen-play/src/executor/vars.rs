//! A task's variables on a host, lowest precedence first (role defaults,
//! inventory, magic, facts, play, role vars, includes, task, registered,
//! extra vars), the names it is shown under, and its templated keywords.

use super::host::HostState;
use super::outcome::cond_error;
use super::{Executor, PlayCtx, abs, bool_val};
use crate::hostvars::{HostVars, Source};
use crate::playbook::{Play, TaskDef};
use crate::template::Vars;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What `omit` renders to; arguments equal to it are dropped.
pub(super) const OMIT: &str = "__omit_place_holder__mitogen_play";

impl Executor {
    /// The name results carry (`TaskResult.task_name`: a named task's
    /// name without its role).
    pub(super) fn plain_name(&self, t: &TaskDef, h: &Arc<HostState>, ctx: &PlayCtx<'_>) -> String {
        match &t.name {
            Some(n) if n.contains("{{") => {
                let vars = self.vars_for(ctx, t, h);
                self.templar.string(n, &vars).unwrap_or_else(|_| n.clone())
            }
            Some(n) => n.clone(),
            // ansible-core's `TaskResult.task_name`: an unnamed task's is
            // `get_name()`, with its role.
            None => self.display_name(t, h, ctx),
        }
    }

    pub(super) fn display_name(
        &self,
        t: &TaskDef,
        h: &Arc<HostState>,
        ctx: &PlayCtx<'_>,
    ) -> String {
        let base = match &t.name {
            Some(n) if n.contains("{{") => {
                let vars = self.vars_for(ctx, t, h);
                self.templar.string(n, &vars).unwrap_or_else(|_| n.clone())
            }
            Some(n) => n.clone(),
            None => t.action.clone(),
        };
        match &t.role {
            Some(r) => format!("{} : {base}", r.name),
            None => base,
        }
    }

    /// `ansible_version`, of the ansible-core in use (as ansible-core's
    /// `CLI.version_info`).
    pub(super) fn ansible_version(&self) -> Value {
        let full = self.runner.source().version().to_owned();
        let mut nums = full
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u64>().unwrap_or(0));
        let (major, minor, revision) = (
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        );
        json!({"full": full, "major": major, "minor": minor, "revision": revision, "string": full})
    }

    /// What `hostvars` and every task of `play` build host variables from.
    pub(super) fn var_source(&self, play: &Play) -> Source {
        let mut magic = Map::new();
        let groups = Source::groups(&self.inventory.lock());
        magic.insert("groups".into(), groups);
        magic.insert(
            "playbook_dir".into(),
            abs(&play.base).display().to_string().into(),
        );
        // ansible-core's options vars (`load_options_vars`).
        magic.insert("ansible_check_mode".into(), self.opts.check.into());
        magic.insert("ansible_diff_mode".into(), self.opts.diff.into());
        magic.insert("ansible_forks".into(), self.opts.forks.into());
        magic.insert(
            "ansible_inventory_sources".into(),
            self.opts.inventory_sources.clone().into(),
        );
        let tags = match self.opts.tags.is_empty() {
            true => vec!["all".to_owned()],
            false => self.opts.tags.clone(),
        };
        magic.insert("ansible_run_tags".into(), tags.into());
        magic.insert(
            "ansible_skip_tags".into(),
            self.opts.skip_tags.clone().into(),
        );
        if let Some(l) = &self.opts.limit {
            magic.insert("ansible_limit".into(), l.clone().into());
        }
        magic.insert("ansible_verbosity".into(), self.opts.verbosity.into());
        magic.insert(
            "ansible_config_file".into(),
            self.opts
                .config_file
                .as_ref()
                .map_or(Value::Null, |p| p.display().to_string().into()),
        );
        magic.insert("ansible_version".into(), self.ansible_version());
        magic.insert(
            "ansible_playbook_python".into(),
            self.runner.source().python().display().to_string().into(),
        );
        Source {
            inventory: self.inventory.clone(),
            hosts: self.hosts.clone(),
            extra_vars: self.extra_vars.clone(),
            magic: parking_lot::RwLock::new(Arc::new(magic)),
            templar: self.templar.clone(),
        }
    }

    /// Variables for `t` on `h`, lowest precedence first.
    pub(super) fn vars_for(&self, ctx: &PlayCtx<'_>, t: &TaskDef, h: &Arc<HostState>) -> Vars {
        let mut v = Vars::new();
        if let Some(r) = &t.role {
            v.push(r.defaults.clone());
        }
        let (inventory, own) = ctx.src.inventory_layers(&h.name);
        v.push(Arc::new(inventory));
        // The play's common magic is shared, not copied (`groups` is big).
        v.push(ctx.src.magic());
        let mut magic = own;
        magic.insert("ansible_play_hosts_all".into(), ctx.hosts.clone().into());
        magic.insert("ansible_play_batch".into(), ctx.batch.clone().into());
        let alive: Vec<String> = ctx
            .batch
            .iter()
            .filter(|x| {
                let s = self.host(x);
                !s.failed.load(Ordering::Relaxed) && !s.unreachable.load(Ordering::Relaxed)
            })
            .cloned()
            .collect();
        magic.insert("ansible_play_hosts".into(), alive.clone().into());
        magic.insert("play_hosts".into(), alive.into());
        magic.insert("ansible_play_name".into(), ctx.play.name.clone().into());
        magic.insert("omit".into(), OMIT.into());
        // Where lookups find files: the role, the task file's directory,
        // the playbook's (ansible-core's `Task.get_search_path`).
        let mut search: Vec<String> = Vec::new();
        if let Some(r) = &t.role {
            magic.insert("role_name".into(), r.short_name().into());
            let rp = abs(&r.path).display().to_string();
            magic.insert("role_path".into(), rp.clone().into());
            search.push(rp);
        }
        for d in [abs(&t.base), abs(&ctx.play.base)] {
            let d = d.display().to_string();
            if !search.contains(&d) {
                search.push(d);
            }
        }
        magic.insert("ansible_search_path".into(), search.into());
        v.push(Arc::new(magic));
        if let Some(f) = Source::facts_layer(h) {
            v.push_untrusted(Arc::new(f));
        }
        v.push(ctx.play_vars.clone());
        if let Some(r) = &t.role {
            v.push(r.vars.clone());
        }
        for l in h.include_vars.lock().iter() {
            v.push_untrusted(l.clone());
        }
        v.push(Arc::new(t.kw.vars.clone()));
        v.push(Arc::new(h.included.lock().clone()));
        v.push_untrusted(Arc::new(h.registered.lock().clone()));
        v.push(self.extra_vars.clone());
        v.push_object(
            "hostvars",
            minijinja::value::Value::from_object(HostVars(ctx.src.clone())),
        );
        v
    }

    pub(super) fn when_ok(&self, t: &TaskDef, vars: &Vars) -> Result<bool, String> {
        for (c, _) in &t.kw.when {
            if !self.templar.cond(c, vars).map_err(|e| cond_error(&e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn first_false(&self, t: &TaskDef, vars: &Vars) -> Value {
        for (c, _) in &t.kw.when {
            if !self.templar.cond(c, vars).unwrap_or(true) {
                return c.clone();
            }
        }
        Value::Null
    }

    pub(super) fn ignore_errors(&self, t: &TaskDef, vars: &Vars) -> bool {
        t.kw.ignore_errors.as_ref().is_some_and(|v| {
            self.templar
                .value(v, vars)
                .map(|x| bool_val(&x))
                .unwrap_or(false)
        })
    }

    pub(super) fn kw_bool(&self, v: &Option<Value>, vars: &Vars) -> Option<bool> {
        v.as_ref().map(|v| {
            self.templar
                .value(v, vars)
                .map(|x| bool_val(&x))
                .unwrap_or(false)
        })
    }
}
