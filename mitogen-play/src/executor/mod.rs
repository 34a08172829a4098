//! The executor: plays over hosts with the linear and free strategies.
//!
//! Where each part lives (every file an `impl Executor` block or the types
//! it works on):
//!
//! ```text
//! Executor::run (mod.rs)  plays, hosts, batches
//!  └ strategy.rs          linear/free, blocks, handlers, meta, accounting
//!     ├ include.rs        include_tasks / include_role at run time
//!     └ task_loop.rs      when, loop, until, changed_when/failed_when
//!        ├ vars.rs        a task's variables on a host, its keywords
//!        ├ controller.rs  debug, set_fact, include_vars, assert, fail
//!        └ module.rs      everything else, through the runner
//!           ├ delegate.rs delegate_to's facts and vars
//!           └ host.rs     per-host state, connections, become
//! options.rs: Options, host order, serial; outcome.rs: result shapes
//! ```

mod controller;
mod delegate;
mod host;
mod include;
mod include_vars;
mod module;
mod options;
mod outcome;
mod strategy;
mod task_loop;
mod vars;

pub(crate) use host::HostState;

/// Whether the controller runs action `short_name` itself (its failures
/// are an action's, not a module's).
pub(crate) fn is_controller_action(short_name: &str) -> bool {
    controller::controller_action(short_name).is_some()
}
use host::SshDest;
pub use options::{Become, DEFAULT_BECOME_LIMIT, DEFAULT_FORKS, Options};

use crate::PlayError;
use crate::events::{Event, Stats};
use crate::hostvars::Source;
use crate::inventory::{Inventory, read_vars_file};
use crate::playbook::{Item, ParseOptions, Play, TaskDef, TaskId};
use crate::template::{Templar, Vars, truthy};
use crossbeam_channel::{Receiver, Sender, unbounded};
use mitogen_ansible::Runner;
use mitogen_core::Router;
use mitogen_ssh::BecomePool;
use options::{batches, shuffle};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strategy::gather_task;

/// Per-play state shared by the hosts' workers.
struct PlayCtx<'p> {
    play: &'p Play,
    /// Every host's variables (`hostvars`) and the play's common magic.
    src: Arc<Source>,
    play_vars: Arc<Map<String, Value>>,
    hosts: Vec<String>,
    batch: Vec<String>,
    handlers: Mutex<Vec<TaskDef>>,
    aborted: AtomicBool,
    /// `max_fail_percentage` exceeded: no later batch or play runs
    /// (ansible-core's `RUN_FAILED_BREAK_PLAY`).
    break_play: AtomicBool,
    /// Tasks whose start was announced in this batch.
    started: Mutex<HashSet<TaskId>>,
    fail_pct_base: usize,
}

/// Runs plays; see the [module docs](super).
pub struct Executor {
    router: Router,
    runner: Arc<Runner>,
    inventory: Arc<Mutex<Inventory>>,
    /// `opts.extra_vars`, shared by every task's variables.
    extra_vars: Arc<Map<String, Value>>,
    opts: Options,
    parse: ParseOptions,
    templar: Templar,
    subscribers: Mutex<Vec<Sender<Event>>>,
    hosts: Arc<Mutex<HashMap<String, Arc<HostState>>>>,
    pool: BecomePool,
    /// Per ssh destination: whether its ControlMaster is up. The first
    /// connection to a destination starts the master alone; concurrent
    /// first connections to the same `%C` would race for the socket.
    masters: Mutex<HashMap<SshDest, Arc<Mutex<bool>>>>,
    /// `--start-at-task` was found in an earlier play.
    start_found: AtomicBool,
}

/// Whether `--start-at-task` names a task of `play` (its facts gathering
/// included), in the order ansible-core's iterator peeks: blocks and their
/// `always`, not `rescue`, not into dynamic includes.
fn play_has_start(opts: &Options, play: &Play) -> bool {
    fn any(opts: &Options, items: &[Item]) -> bool {
        items.iter().any(|i| match i {
            Item::Task(t) => opts.starts_at(t),
            Item::Block(b) => any(opts, &b.block) || any(opts, &b.always),
        })
    }
    opts.starts_at(&gather_task(play)) || play.sections.iter().any(|s| any(opts, s))
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

pub(crate) fn bool_val(v: &Value) -> bool {
    match v {
        Value::String(s) => matches!(
            s.to_lowercase().trim(),
            "yes" | "on" | "1" | "true" | "y" | "t"
        ),
        other => truthy(other),
    }
}

pub(super) fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

impl Executor {
    /// An executor over `inventory`, running modules through `runner`.
    pub fn new(
        router: Router,
        runner: Arc<Runner>,
        mut inventory: Inventory,
        opts: Options,
    ) -> Self {
        inventory.set_playbook_python(&runner.source().python().display().to_string());
        Self {
            router,
            runner,
            inventory: Arc::new(Mutex::new(inventory)),
            extra_vars: Arc::new(opts.extra_vars.clone()),
            pool: BecomePool::new(opts.become_limit),
            opts,
            parse: ParseOptions::default(),
            templar: Templar::new(),
            subscribers: Mutex::new(Vec::new()),
            hosts: Arc::new(Mutex::new(HashMap::new())),
            masters: Mutex::new(HashMap::new()),
            start_found: AtomicBool::new(false),
        }
    }

    /// Parse options used for `include_tasks` at run time.
    pub fn parse_options(mut self, p: ParseOptions) -> Self {
        self.templar = Templar::with_plugins(p.plugins.clone());
        self.parse = p;
        self
    }

    /// A stream of every [`Event`] from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        self.subscribers.lock().push(tx);
        rx
    }

    pub(super) fn emit(&self, e: Event) {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| s.send(e.clone()).is_ok());
    }

    pub(super) fn host(&self, name: &str) -> Arc<HostState> {
        self.hosts
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(HostState {
                    name: name.to_owned(),
                    ..HostState::default()
                })
            })
            .clone()
    }

    /// Runs `plays`; returns the recap per host (also sent as
    /// [`Event::Recap`]).
    ///
    /// # Errors
    /// Host patterns or `vars_files` that cannot be resolved.
    pub fn run(&self, plays: &[Play]) -> Result<Vec<(String, Stats)>, PlayError> {
        let mut all_hosts: Vec<String> = Vec::new();
        for play in plays {
            let hosts = self.play_hosts(play)?;
            for h in &hosts {
                if !all_hosts.contains(h) {
                    all_hosts.push(h.clone());
                }
            }
            self.emit(Event::PlayStart {
                name: play.name.clone(),
                hosts: hosts.clone(),
            });
            if hosts.is_empty() {
                self.emit(Event::Warning("no hosts matched".into()));
                continue;
            }
            // Roles are a play's (ansible-core caches them per play): one
            // that ran in an earlier play runs again in this one.
            for h in &hosts {
                let st = self.host(h);
                st.roles_ran.lock().clear();
                st.roles_done.lock().clear();
            }
            // --start-at-task: a play without the task does not run; in
            // the one that has it, facts are gathered, then tasks before
            // it are skipped (ansible-core's PlayIterator).
            let seeking =
                self.opts.start_at_task.is_some() && !self.start_found.load(Ordering::Relaxed);
            if seeking {
                if !play_has_start(&self.opts, play) {
                    continue;
                }
                self.start_found.store(true, Ordering::Relaxed);
                for h in &hosts {
                    self.host(h).seeking_start.store(true, Ordering::Relaxed);
                }
            }
            let play_vars = self.play_vars(play, &hosts)?;
            let src = Arc::new(self.var_source(play));
            let mut break_play = false;
            for batch in batches(&hosts, &play.serial) {
                let down = |hs: &[String]| {
                    hs.iter()
                        .filter(|h| {
                            let s = self.host(h);
                            s.failed.load(Ordering::Relaxed)
                                || s.unreachable.load(Ordering::Relaxed)
                        })
                        .count()
                };
                let down_before = down(&batch);
                let live: Vec<String> = batch
                    .iter()
                    .filter(|h| {
                        let s = self.host(h);
                        !s.failed.load(Ordering::Relaxed) && !s.unreachable.load(Ordering::Relaxed)
                    })
                    .cloned()
                    .collect();
                if live.is_empty() {
                    continue;
                }
                let ctx = PlayCtx {
                    play,
                    src: src.clone(),
                    play_vars: play_vars.clone(),
                    hosts: hosts.clone(),
                    batch: live.clone(),
                    handlers: Mutex::new(play.handlers.clone()),
                    aborted: AtomicBool::new(false),
                    break_play: AtomicBool::new(false),
                    started: Mutex::new(HashSet::new()),
                    fail_pct_base: live.len(),
                };
                for h in &live {
                    self.host(h).ended.store(false, Ordering::Relaxed);
                }
                self.run_batch(&ctx, &live);
                // ansible-core's PlaybookExecutor: a batch whose every host
                // failed in it (or a max_fail_percentage exceeded) ends the
                // playbook, not only the play.
                if ctx.break_play.load(Ordering::Relaxed)
                    || down(&batch).saturating_sub(down_before) == batch.len()
                {
                    break_play = true;
                    break;
                }
                if ctx.aborted.load(Ordering::Relaxed) {
                    break;
                }
            }
            if break_play {
                break;
            }
        }
        let recap: Vec<(String, Stats)> = all_hosts
            .iter()
            .map(|h| (h.clone(), self.host(h).stats.lock().clone()))
            .collect();
        self.emit(Event::Recap(recap.clone()));
        Ok(recap)
    }

    fn play_hosts(&self, play: &Play) -> Result<Vec<String>, PlayError> {
        let mut vars = Vars::new();
        vars.push(self.extra_vars.clone());
        let pattern = self
            .templar
            .string(&play.hosts, &vars)
            .map_err(|e| PlayError::at(&play.loc, format!("hosts: {e}")))?;
        let mut inv = self.inventory.lock();
        let mut hosts = inv
            .matching(&pattern)
            .map_err(|e| PlayError::at(&play.loc, e))?;
        if let Some(l) = &self.opts.limit {
            let allowed = inv.matching(l).map_err(PlayError::Other)?;
            hosts.retain(|h| allowed.contains(h));
        }
        match play.order.as_str() {
            "reverse_inventory" => hosts.reverse(),
            "sorted" => hosts.sort(),
            "reverse_sorted" => {
                hosts.sort();
                hosts.reverse();
            }
            "shuffle" => shuffle(&mut hosts),
            _ => {}
        }
        Ok(hosts)
    }

    fn play_vars(
        &self,
        play: &Play,
        _hosts: &[String],
    ) -> Result<Arc<Map<String, Value>>, PlayError> {
        let mut m = play.kw.vars.clone();
        for (f, loc) in &play.vars_files {
            let mut vars = Vars::new();
            vars.push(Arc::new(m.clone()));
            vars.push(self.extra_vars.clone());
            let name = self
                .templar
                .value(f, &vars)
                .map_err(|e| PlayError::at(loc, format!("vars_files: {e}")))?;
            let name = name
                .as_str()
                .map_or_else(|| name.to_string(), str::to_owned);
            let p = play.base.join(&name);
            let loaded = read_vars_file(&p).map_err(|e| match e {
                PlayError::Vault { path, msg } => PlayError::at(
                    loc,
                    format!("Invalid vars_files file '{}': {msg}", path.display()),
                ),
                e => PlayError::at(loc, format!("vars_files: {e}")),
            })?;
            m.extend(loaded);
        }
        Ok(Arc::new(m))
    }
}
