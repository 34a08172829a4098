//! The strategies (linear, free): which hosts run which task when, blocks
//! with `rescue`/`always`, `run_once`, `throttle`, `any_errors_fatal`,
//! `max_fail_percentage`, `--start-at-task`, handlers and `meta`, and the
//! accounting of each result (stats, failed hosts, notifications, events).

use super::host::HostState;
use super::{Executor, PlayCtx, bool_val};
use crate::events::{Event, HostResult, Outcome};
use crate::playbook::{Item, Play, Strategy, TaskDef, raw_param};
use mitogen_ansible::Status;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub(super) fn gather_task(play: &Play) -> TaskDef {
    let mut t = TaskDef::new(
        "ansible.builtin.gather_facts",
        Value::Object(play.gather_args.clone()),
        play.kw.clone(),
        None,
        play.base.clone(),
        play.loc.clone(),
    );
    t.name = Some("Gathering Facts".into());
    t
}

impl Executor {
    pub(super) fn run_batch(&self, ctx: &PlayCtx<'_>, hosts: &[String]) {
        let gather = ctx.play.gather_facts.unwrap_or(!self.opts.gather_explicit);
        let gather_task = gather.then(|| gather_task(ctx.play));
        match ctx.play.strategy {
            Strategy::Linear => {
                let states: Vec<Arc<HostState>> = hosts.iter().map(|h| self.host(h)).collect();
                if let Some(g) = &gather_task {
                    self.gather(ctx, g, &states);
                }
                for section in &ctx.play.sections {
                    self.linear_items(ctx, section, &states);
                    self.flush_handlers(ctx, &states);
                }
            }
            Strategy::Free => {
                // Each host through the whole play on its own, up to forks
                // at once.
                let states: Vec<Arc<HostState>> = hosts.iter().map(|h| self.host(h)).collect();
                self.parallel(&states, usize::MAX, |h| {
                    let one = std::slice::from_ref(h);
                    if let Some(g) = &gather_task {
                        self.gather(ctx, g, one);
                    }
                    for section in &ctx.play.sections {
                        self.linear_items(ctx, section, one);
                        self.flush_handlers(ctx, one);
                    }
                });
            }
        }
    }

    pub(super) fn alive(&self, ctx: &PlayCtx<'_>, hosts: &[Arc<HostState>]) -> Vec<Arc<HostState>> {
        if ctx.aborted.load(Ordering::Relaxed) {
            return Vec::new();
        }
        hosts
            .iter()
            .filter(|h| {
                !h.failed.load(Ordering::Relaxed)
                    && !h.unreachable.load(Ordering::Relaxed)
                    && !h.ended.load(Ordering::Relaxed)
            })
            .cloned()
            .collect()
    }

    pub(super) fn linear_items(&self, ctx: &PlayCtx<'_>, items: &[Item], hosts: &[Arc<HostState>]) {
        for item in items {
            match item {
                Item::Task(t) => self.linear_task(ctx, t, hosts),
                Item::Block(b) => {
                    let entered = self.alive(ctx, hosts);
                    if entered.is_empty() {
                        continue;
                    }
                    self.linear_items(ctx, &b.block, &entered);
                    let failed: Vec<Arc<HostState>> = entered
                        .iter()
                        .filter(|h| {
                            h.failed.load(Ordering::Relaxed)
                                && !h.unreachable.load(Ordering::Relaxed)
                        })
                        .cloned()
                        .collect();
                    if !b.rescue.is_empty()
                        && !failed.is_empty()
                        && !ctx.aborted.load(Ordering::Relaxed)
                    {
                        for h in &failed {
                            h.failed.store(false, Ordering::Relaxed);
                            // ansible-core's non-persistent facts for the
                            // rescue (and what follows it).
                            if let Some((task, result)) = h.last_failure.lock().clone() {
                                let mut r = h.registered.lock();
                                r.insert("ansible_failed_task".into(), task);
                                r.insert("ansible_failed_result".into(), result);
                            }
                            let mut st = h.stats.lock();
                            st.failed = st.failed.saturating_sub(1);
                            st.rescued += 1;
                        }
                        self.linear_items(ctx, &b.rescue, &failed);
                    }
                    // always: every host that entered and is still there,
                    // failed or not; failures stay failures afterwards.
                    if !b.always.is_empty() {
                        let reach: Vec<Arc<HostState>> = entered
                            .iter()
                            .filter(|h| {
                                !h.unreachable.load(Ordering::Relaxed)
                                    && !h.ended.load(Ordering::Relaxed)
                            })
                            .cloned()
                            .collect();
                        let was: Vec<bool> = reach
                            .iter()
                            .map(|h| h.failed.swap(false, Ordering::Relaxed))
                            .collect();
                        self.linear_items(ctx, &b.always, &reach);
                        for (h, f) in reach.iter().zip(was) {
                            if f {
                                h.failed.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn tags_skip(&self, t: &TaskDef) -> bool {
        !self.opts.selects(&t.kw.tags)
    }

    /// `--start-at-task`: the hosts still looking for it skip `t` unless
    /// it is the one (then they stop looking).
    pub(super) fn start_at(&self, t: &TaskDef, hosts: Vec<Arc<HostState>>) -> Vec<Arc<HostState>> {
        if !hosts
            .iter()
            .any(|h| h.seeking_start.load(Ordering::Relaxed))
        {
            return hosts;
        }
        if self.opts.starts_at(t) {
            for h in &hosts {
                h.seeking_start.store(false, Ordering::Relaxed);
            }
            return hosts;
        }
        hosts
            .into_iter()
            .filter(|h| !h.seeking_start.load(Ordering::Relaxed))
            .collect()
    }

    pub(super) fn task_start(&self, ctx: &PlayCtx<'_>, t: &TaskDef, name: &str, handler: bool) {
        if ctx.started.lock().insert(t.id) {
            self.emit(Event::TaskStart {
                name: name.to_owned(),
                handler,
                loc: t.loc.to_string(),
            });
        }
    }

    /// The play's facts gathering: it runs while `--start-at-task` is still
    /// sought (ansible-core resets the found host to its setup step), and
    /// is itself a task that can be named.
    pub(super) fn gather(&self, ctx: &PlayCtx<'_>, g: &TaskDef, hosts: &[Arc<HostState>]) {
        let found = self.opts.starts_at(g);
        let seeking: Vec<bool> = hosts
            .iter()
            .map(|h| h.seeking_start.swap(false, Ordering::Relaxed))
            .collect();
        self.linear_task(ctx, g, hosts);
        for (h, s) in hosts.iter().zip(seeking) {
            if s && !found {
                h.seeking_start.store(true, Ordering::Relaxed);
            }
        }
    }

    /// One task over `hosts` (all at once, up to `forks`).
    pub(super) fn linear_task(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
        self.task_on(ctx, t, hosts, false);
    }

    pub(super) fn task_on(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        hosts: &[Arc<HostState>],
        handler: bool,
    ) {
        let mut hosts = self.alive(ctx, hosts);
        if !handler {
            hosts = self.start_at(t, hosts);
        }
        if let Some(r) = t.role.as_ref().filter(|r| !r.allow_duplicates && !handler) {
            // ansible-core's PlayIterator: a role that already ran here
            // is skipped, without a word (an include_role's dependencies).
            hosts.retain(|h| !h.roles_done.lock().contains(&r.key));
        }
        if hosts.is_empty() || (self.tags_skip(t) && t.short_action() != "gather_facts_implicit") {
            return;
        }
        let a = t.short_action();
        if a == "meta" {
            self.meta(ctx, t, &hosts);
            return;
        }
        if t.is_include() {
            self.include(ctx, t, &hosts);
            return;
        }
        let display = self.display_name(t, &hosts[0], ctx);
        self.task_start(ctx, t, &display, handler);
        let display = self.plain_name(t, &hosts[0], ctx);
        let run_once = t.kw.run_once.as_ref().is_some_and(bool_val);
        let targets: Vec<Arc<HostState>> = if run_once || super::controller::bypasses_host_loop(a) {
            hosts[..1].to_vec()
        } else {
            hosts.clone()
        };
        let results: Mutex<Vec<(Arc<HostState>, Outcome)>> = Mutex::new(Vec::new());
        // `throttle:` (0 or unset: no limit beyond forks).
        let throttle =
            t.kw.throttle
                .as_ref()
                .and_then(|v| {
                    self.templar
                        .value(v, &self.vars_for(ctx, t, &targets[0]))
                        .ok()
                })
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                })
                .filter(|&n| n > 0)
                .map_or(usize::MAX, |n| n as usize);
        self.parallel(&targets, throttle, |h| {
            let started = Instant::now();
            let (mut out, delegated) = self.run_on_host(ctx, t, h);
            out.duration = started.elapsed();
            self.account(ctx, t, h, &out, &display, delegated);
            results.lock().push((h.clone(), out));
        });
        if run_once {
            // The result (and register) applies to every host.
            let first = results.lock().first().map(|(_, o)| o.clone());
            if let Some(o) = first {
                for h in &hosts[1..] {
                    if let Some(reg) = &t.register {
                        h.registered.lock().insert(reg.clone(), o.register.clone());
                    }
                    if matches!(o.status, Status::Ok | Status::Changed) {
                        if let Some(Value::Object(f)) = o.register.get("ansible_facts") {
                            let mut facts = h.facts.lock();
                            for (k, v) in f {
                                facts.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
        let res = results.into_inner();
        let any_failed = res
            .iter()
            .any(|(_, o)| o.status == Status::Failed && !o.ignored);
        let fatal = t.kw.any_errors_fatal.as_ref().is_some_and(bool_val);
        if any_failed && fatal {
            ctx.aborted.store(true, Ordering::Relaxed);
            for h in &hosts {
                h.failed.store(true, Ordering::Relaxed);
            }
        }
        if let Some(pct) = ctx.play.max_fail_percentage {
            let failed = ctx
                .batch
                .iter()
                .filter(|h| {
                    let s = self.host(h);
                    s.failed.load(Ordering::Relaxed) || s.unreachable.load(Ordering::Relaxed)
                })
                .count();
            if ctx.fail_pct_base > 0 && (failed as f64) * 100.0 / (ctx.fail_pct_base as f64) > pct {
                ctx.aborted.store(true, Ordering::Relaxed);
                ctx.break_play.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Runs `f` for every host, up to `limit` (`forks`, or a lower
    /// `throttle`) at once.
    pub(super) fn parallel<F: Fn(&Arc<HostState>) + Sync>(
        &self,
        hosts: &[Arc<HostState>],
        limit: usize,
        f: F,
    ) {
        if hosts.len() == 1 {
            f(&hosts[0]);
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let n = limit.min(self.opts.forks).clamp(1, hosts.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(h) = hosts.get(i) else { break };
                        f(h);
                    }
                });
            }
        });
    }

    pub(super) fn account(
        &self,
        ctx: &PlayCtx<'_>,
        t: &TaskDef,
        h: &Arc<HostState>,
        out: &Outcome,
        display: &str,
        delegated: Option<String>,
    ) {
        {
            let mut st = h.stats.lock();
            match out.status {
                Status::Failed if out.ignored => {
                    st.ignored += 1;
                    st.ok += 1;
                    if out.changed {
                        st.changed += 1;
                    }
                }
                Status::Failed => st.failed += 1,
                Status::Unreachable => st.unreachable += 1,
                Status::Skipped => st.skipped += 1,
                // An include counts ok once per file (or role) it brings
                // in, when that is loaded (`include`), not for its result.
                _ if t.is_include() => {}
                _ => {
                    st.ok += 1;
                    if out.changed {
                        st.changed += 1;
                    }
                }
            }
        }
        if let (Some(r), Status::Ok | Status::Changed | Status::Failed) = (&t.role, out.status) {
            h.roles_ran.lock().insert(r.key.clone());
        }
        match out.status {
            Status::Failed if !out.ignored => {
                h.failed.store(true, Ordering::Relaxed);
                *h.last_failure.lock() = Some((t.serialize(), out.register.clone()));
            }
            Status::Unreachable if !out.ignored => h.unreachable.store(true, Ordering::Relaxed),
            _ => {}
        }
        if out.changed && !t.notify.is_empty() && out.status != Status::Failed {
            let vars = self.vars_for(ctx, t, h);
            let mut n = h.notified.lock();
            for name in &t.notify {
                let name = self
                    .templar
                    .string(name, &vars)
                    .unwrap_or_else(|_| name.clone());
                if !n.contains(&name) {
                    n.push(name);
                }
            }
        }
        self.emit(Event::HostResult(HostResult {
            host: h.name.clone(),
            task: display.to_owned(),
            action: t.action.clone(),
            status: out.status,
            changed: out.changed,
            ignored: out.ignored,
            result: out.callback.clone(),
            duration: out.duration,
            delegated_to: delegated,
            origin: t.loc.clone(),
            raised: out.raised,
        }));
    }

    pub(super) fn meta(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
        let what = raw_param(&t.args).unwrap_or_default();
        match what.as_str() {
            "flush_handlers" => self.flush_handlers(ctx, hosts),
            "end_play" => ctx.aborted.store(true, Ordering::Relaxed),
            "end_host" => {
                for h in hosts {
                    let vars = self.vars_for(ctx, t, h);
                    if self.when_ok(t, &vars).unwrap_or(false) {
                        h.ended.store(true, Ordering::Relaxed);
                    }
                }
            }
            "role_complete" => {
                if let Some(r) = &t.role {
                    for h in hosts {
                        if h.roles_ran.lock().contains(&r.key) {
                            h.roles_done.lock().insert(r.key.clone());
                        }
                    }
                }
            }
            "clear_host_errors" => {
                for h in self.hosts.lock().values() {
                    h.failed.store(false, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    pub(super) fn flush_handlers(&self, ctx: &PlayCtx<'_>, hosts: &[Arc<HostState>]) {
        let handlers = ctx.handlers.lock().clone();
        for hd in &handlers {
            let names: Vec<String> = hd
                .name
                .iter()
                .cloned()
                .chain(
                    hd.role
                        .as_ref()
                        .and_then(|r| hd.name.as_ref().map(|n| format!("{} : {n}", r.name))),
                )
                .chain(hd.listen.iter().cloned())
                .collect();
            let which: Vec<Arc<HostState>> = self
                .alive(ctx, hosts)
                .into_iter()
                .filter(|h| h.notified.lock().iter().any(|n| names.contains(n)))
                .collect();
            if which.is_empty() {
                continue;
            }
            for h in &which {
                h.notified.lock().retain(|n| !names.contains(n));
            }
            // A handler is announced at every flush it runs in.
            ctx.started.lock().remove(&hd.id);
            self.task_on(ctx, hd, &which, true);
        }
    }
}
