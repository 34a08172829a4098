//! The executor: plays over hosts with the linear and free strategies.

use super::PlayError;
use super::events::{Event, HostResult, Outcome, Stats};
use super::hostvars::{HostVars, Source};
use super::inventory::{Inventory, read_vars_file};
use super::playbook::{self, Item, ParseOptions, Play, Strategy, TaskDef, raw_param, short};
use super::template::{PlayHook, Templar, TemplateError, Vars, truthy};
use crossbeam_channel::{Receiver, Sender, unbounded};
use mitogen_ansible::{Connection, Runner, Status, Target, Task};
use mitogen_core::{Context, Local, Router};
use mitogen_ssh::{BecomePool, Doas, HostKeyChecking, Ssh, Su, Sudo};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Default `forks`: hosts worked on at once. Ansible's is 5 because each
/// fork is a Python process; here a fork is a thread blocked on a reply
/// from the host's agent, so the controller's cost per fork is a stack
/// and a few fds, and the limit is what the targets and the network take.
pub const DEFAULT_FORKS: usize = 100;
/// Become contexts kept per host (least recently used beyond that closed).
pub const DEFAULT_BECOME_LIMIT: usize = 8;
/// What `omit` renders to; arguments equal to it are dropped.
const OMIT: &str = "__omit_place_holder__mitogen_play";
const NO_TRACEBACK: &str = "(traceback unavailable)";

/// How plays run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Hosts at once (`-f`).
    pub forks: usize,
    /// `-C`.
    pub check: bool,
    /// `-D`.
    pub diff: bool,
    /// `--tags` (empty: all).
    pub tags: Vec<String>,
    /// `--skip-tags`.
    pub skip_tags: Vec<String>,
    /// `-l` pattern.
    pub limit: Option<String>,
    /// `-e` variables.
    pub extra_vars: Map<String, Value>,
    /// Deadline for a whole connection: ssh, the agent's bootstrap and its
    /// greeting (ansible's `timeout` covers only ssh's TCP connect, so the
    /// CLI uses at least 30 s). Default 30 s.
    pub connect_timeout: Duration,
    /// ssh host key checking (`host_key_checking`).
    pub host_key_checking: bool,
    /// ssh ControlMaster/ControlPersist (as Ansible's ssh connection).
    pub multiplex: bool,
    /// `remote_user` default.
    pub remote_user: Option<String>,
    /// `interpreter_python` default.
    pub interpreter_python: Option<String>,
    /// `private_key_file` default.
    pub private_key_file: Option<PathBuf>,
    /// `[privilege_escalation]` defaults: become, user, method.
    pub become_: (bool, String, String),
    /// `pipelining` default.
    pub pipelining: bool,
    /// Extra ssh arguments (`ssh_args`).
    pub ssh_args: Vec<String>,
    /// `gathering = explicit`: plays gather only when they say so.
    pub gather_explicit: bool,
    /// Become contexts per host.
    pub become_limit: usize,
    /// The connection of hosts whose variables name none (`-c`): `ssh`
    /// (the default) or `local`.
    pub connection: String,
    /// The ssh password of hosts that set no `ansible_password` (`-k`).
    pub connection_password: Option<String>,
    /// The become password of hosts that set no `ansible_become_password`
    /// (`-K`).
    pub become_password: Option<String>,
    /// `--start-at-task`: tasks are skipped, without output, until the
    /// first whose name is this or matches it as a glob (`fnmatch`), also
    /// as `role : name`; plays before the one holding it do not run.
    pub start_at_task: Option<String>,
}

impl Options {
    /// Whether a task with `tags` runs under `--tags`/`--skip-tags`
    /// (ansible-core's `evaluate_tags`: `always`, `never`, `all`,
    /// `tagged`, `untagged`).
    ///
    /// ```
    /// let mut o = mitogen_play::Options::default();
    /// o.tags = vec!["deploy".into()];
    /// assert!(o.selects(&["deploy".into(), "web".into()]));
    /// assert!(o.selects(&["always".into()]));
    /// assert!(!o.selects(&["web".into()]));
    /// ```
    pub fn selects(&self, tags: &[String]) -> bool {
        if tags.iter().any(|x| x == "never")
            && !self.tags.iter().any(|x| tags.contains(x) || x == "never")
        {
            return false;
        }
        if !self.tags.is_empty() {
            let hit = self.tags.iter().any(|x| {
                tags.contains(x)
                    || x == "all"
                    || (x == "tagged" && !tags.is_empty())
                    || (x == "untagged" && tags.is_empty())
            }) || tags.iter().any(|x| x == "always");
            if !hit {
                return false;
            }
        }
        !self.skip_tags.iter().any(|x| tags.contains(x))
    }

    /// Whether task `t` is where `--start-at-task` starts.
    pub fn starts_at(&self, t: &TaskDef) -> bool {
        let Some(pat) = &self.start_at_task else {
            return true;
        };
        if t.is_implicit() {
            return false;
        }
        let glob = super::lookup::fnmatch_regex(pat);
        let full = t.list_name();
        t.name
            .as_deref()
            .is_some_and(|n| n == pat || glob.is_match(n))
            || full == *pat
            || glob.is_match(&full)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            forks: DEFAULT_FORKS,
            check: false,
            diff: false,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            limit: None,
            extra_vars: Map::new(),
            connect_timeout: Duration::from_secs(30),
            host_key_checking: true,
            multiplex: true,
            remote_user: None,
            interpreter_python: None,
            private_key_file: None,
            become_: (false, "root".into(), "sudo".into()),
            pipelining: false,
            ssh_args: Vec::new(),
            gather_explicit: false,
            become_limit: DEFAULT_BECOME_LIMIT,
            connection: "ssh".into(),
            connection_password: None,
            become_password: None,
            start_at_task: None,
        }
    }
}

/// `order: shuffle`: Fisher-Yates with a clock-seeded xorshift (a fresh
/// order each run is all it promises).
fn shuffle(v: &mut [String]) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// How a host is logged in to: its connection's identity.
struct Login {
    connection: String,
    user: Option<String>,
    port: Option<String>,
}

/// Why a task's context could not be had.
enum TargetError {
    /// The host (or its become user) cannot be reached: `unreachable`.
    Unreachable(String),
    /// Reached, but the task fails (a wrong become password, as
    /// ansible-core reports it).
    Failed(String),
}

impl From<String> for TargetError {
    fn from(msg: String) -> Self {
        Self::Unreachable(msg)
    }
}

/// What the executor keeps per host.
#[derive(Default)]
pub(crate) struct HostState {
    name: String,
    /// `--start-at-task` not reached yet in this play.
    seeking_start: AtomicBool,
    /// The host's connections, by how they are made (connection, user,
    /// port): tasks with another `remote_user` get their own.
    base: Mutex<HashMap<String, Result<Context, String>>>,
    connecting: Mutex<()>,
    /// Facts, by the names modules returned them under (`ansible_hostname`,
    /// `getent_passwd`).
    pub(crate) facts: Mutex<Map<String, Value>>,
    /// set_fact, register, include_vars.
    pub(crate) registered: Mutex<Map<String, Value>>,
    failed: AtomicBool,
    unreachable: AtomicBool,
    ended: AtomicBool,
    stats: Mutex<Stats>,
    notified: Mutex<Vec<String>>,
    /// The loop variables of the `include_tasks`/`include_role` items
    /// being run on this host, innermost last (task-level variables of
    /// the included tasks, as ansible-core's `IncludedFile._vars`).
    include_vars: Mutex<Vec<Arc<Map<String, Value>>>>,
    /// The last task that failed here and its result: `rescue:` sees them
    /// as `ansible_failed_task` and `ansible_failed_result`.
    last_failure: Mutex<Option<(Value, Value)>>,
    /// Roles ([`Role::key`](super::playbook::Role::key)) a task of which
    /// ran here, and those that then completed (`role_complete`): a role
    /// without `allow_duplicates` does not run again on this host.
    roles_ran: Mutex<HashSet<String>>,
    roles_done: Mutex<HashSet<String>>,
}

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
    started: Mutex<HashSet<usize>>,
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
    masters: Mutex<HashMap<String, Arc<Mutex<bool>>>>,
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
        self.parse = p;
        self
    }

    /// A stream of every [`Event`] from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        self.subscribers.lock().push(tx);
        rx
    }

    fn emit(&self, e: Event) {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| s.send(e.clone()).is_ok());
    }

    fn host(&self, name: &str) -> Arc<HostState> {
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

    fn run_batch(&self, ctx: &PlayCtx<'_>, hosts: &[String]) {
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
                let next = std::sync::atomic::AtomicUsize::new(0);
                let n = self.opts.forks.clamp(1, hosts.len().max(1));
                std::thread::scope(|s| {
                    for _ in 0..n {
                        s.spawn(|| {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(h) = hosts.get(i) else { break };
                                let one = vec![self.host(h)];
                                if let Some(g) = &gather_task {
                                    self.gather(ctx, g, &one);
                                }
                                for section in &ctx.play.sections {
                                    self.linear_items(ctx, section, &one);
                                    self.flush_handlers(ctx, &one);
                                }
                            }
                        });
                    }
                });
            }
        }
    }

    fn alive(&self, ctx: &PlayCtx<'_>, hosts: &[Arc<HostState>]) -> Vec<Arc<HostState>> {
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

    fn linear_items(&self, ctx: &PlayCtx<'_>, items: &[Item], hosts: &[Arc<HostState>]) {
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

    fn tags_skip(&self, t: &TaskDef) -> bool {
        !self.opts.selects(&t.kw.tags)
    }

    /// `--start-at-task`: the hosts still looking for it skip `t` unless
    /// it is the one (then they stop looking).
    fn start_at(&self, t: &TaskDef, hosts: Vec<Arc<HostState>>) -> Vec<Arc<HostState>> {
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

    fn task_start(&self, ctx: &PlayCtx<'_>, t: &TaskDef, name: &str, handler: bool) {
        let key = t as *const TaskDef as usize;
        if ctx.started.lock().insert(key) {
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
    fn gather(&self, ctx: &PlayCtx<'_>, g: &TaskDef, hosts: &[Arc<HostState>]) {
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
    fn linear_task(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
        self.task_on(ctx, t, hosts, false);
    }

    fn task_on(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>], handler: bool) {
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
        if a == "include_tasks" || t.included.is_some() {
            self.include(ctx, t, &hosts);
            return;
        }
        let display = self.display_name(t, &hosts[0], ctx);
        self.task_start(ctx, t, &display, handler);
        let display = self.plain_name(t, &hosts[0], ctx);
        let run_once = t.kw.run_once.as_ref().is_some_and(bool_val);
        let targets: Vec<Arc<HostState>> = if run_once {
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
    fn parallel<F: Fn(&Arc<HostState>) + Sync>(
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

    /// The name results carry (`TaskResult.task_name`: no role prefix).
    fn plain_name(&self, t: &TaskDef, h: &Arc<HostState>, ctx: &PlayCtx<'_>) -> String {
        match &t.name {
            Some(n) if n.contains("{{") => {
                let vars = self.vars_for(ctx, t, h);
                self.templar.string(n, &vars).unwrap_or_else(|_| n.clone())
            }
            Some(n) => n.clone(),
            None => t.action.clone(),
        }
    }

    fn display_name(&self, t: &TaskDef, h: &Arc<HostState>, ctx: &PlayCtx<'_>) -> String {
        let base = match &t.name {
            Some(n) if n.contains("{{") => {
                let vars = self.vars_for(ctx, t, h);
                self.templar.string(n, &vars).unwrap_or_else(|_| n.clone())
            }
            Some(n) => n.clone(),
            None => t.action.clone(),
        };
        match &t.role {
            Some(r) if t.name.is_some() => format!("{} : {base}", r.name),
            Some(r) => format!("{} : {base}", r.name),
            None => base,
        }
    }

    fn account(
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
        }));
    }

    /// `ansible_version`, of the ansible-core in use (as ansible-core's
    /// `CLI.version_info`).
    fn ansible_version(&self) -> Value {
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
    fn var_source(&self, play: &Play) -> Source {
        let mut magic = Map::new();
        let inv = self.inventory.lock();
        let mut groups = Map::new();
        for g in inv.group_names() {
            groups.insert(g.clone(), inv.group_hosts(&g).into());
        }
        drop(inv);
        magic.insert("groups".into(), Value::Object(groups));
        magic.insert(
            "playbook_dir".into(),
            abs(&play.base).display().to_string().into(),
        );
        magic.insert("ansible_check_mode".into(), self.opts.check.into());
        magic.insert("ansible_diff_mode".into(), self.opts.diff.into());
        magic.insert("ansible_version".into(), self.ansible_version());
        magic.insert(
            "ansible_playbook_python".into(),
            self.runner.source().python().display().to_string().into(),
        );
        Source {
            inventory: self.inventory.clone(),
            hosts: self.hosts.clone(),
            extra_vars: self.extra_vars.clone(),
            magic: Arc::new(magic),
            templar: self.templar.clone(),
        }
    }

    /// Variables for `t` on `h`, lowest precedence first.
    fn vars_for(&self, ctx: &PlayCtx<'_>, t: &TaskDef, h: &Arc<HostState>) -> Vars {
        let mut v = Vars::new();
        if let Some(r) = &t.role {
            v.push(r.defaults.clone());
        }
        let (inventory, own) = ctx.src.inventory_layers(&h.name);
        v.push(Arc::new(inventory));
        // The play's common magic is shared, not copied (`groups` is big).
        v.push(ctx.src.magic.clone());
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
            magic.insert("role_name".into(), r.name.clone().into());
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
            v.push(Arc::new(f));
        }
        v.push(ctx.play_vars.clone());
        if let Some(r) = &t.role {
            v.push(r.vars.clone());
        }
        for l in h.include_vars.lock().iter() {
            v.push(l.clone());
        }
        v.push(Arc::new(t.kw.vars.clone()));
        v.push(Arc::new(h.registered.lock().clone()));
        v.push(self.extra_vars.clone());
        v.push_object(
            "hostvars",
            minijinja::value::Value::from_object(HostVars(ctx.src.clone())),
        );
        v
    }

    fn meta(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
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

    fn flush_handlers(&self, ctx: &PlayCtx<'_>, hosts: &[Arc<HostState>]) {
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
            self.task_on(ctx, hd, &which, true);
        }
    }

    /// `include_tasks` and `include_role`, looped or not: each host's
    /// result first, then every included file (or the role), in the order
    /// first met, for the hosts (and items) that included it.
    fn include(&self, ctx: &PlayCtx<'_>, t: &TaskDef, hosts: &[Arc<HostState>]) {
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
        for g in groups.into_inner() {
            let layer = Arc::new(g.vars);
            for h in &g.hosts {
                h.include_vars.lock().push(layer.clone());
            }
            match (&g.file, &t.included) {
                (None, Some(items)) => self.linear_items(ctx, items, &g.hosts),
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
    fn include_one(
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

    fn when_ok(&self, t: &TaskDef, vars: &Vars) -> Result<bool, String> {
        for (c, _) in &t.kw.when {
            if !self.templar.cond(c, vars).map_err(|e| cond_error(&e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn first_false(&self, t: &TaskDef, vars: &Vars) -> Value {
        for (c, _) in &t.kw.when {
            if !self.templar.cond(c, vars).unwrap_or(true) {
                return c.clone();
            }
        }
        Value::Null
    }

    fn ignore_errors(&self, t: &TaskDef, vars: &Vars) -> bool {
        t.kw.ignore_errors.as_ref().is_some_and(|v| {
            self.templar
                .value(v, vars)
                .map(|x| bool_val(&x))
                .unwrap_or(false)
        })
    }

    fn kw_bool(&self, v: &Option<Value>, vars: &Vars) -> Option<bool> {
        v.as_ref().map(|v| {
            self.templar
                .value(v, vars)
                .map(|x| bool_val(&x))
                .unwrap_or(false)
        })
    }

    /// Runs `t` on one host (loop, when, until, changed/failed_when, register).
    fn run_on_host(
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
            h.registered
                .lock()
                .insert(reg.clone(), out.register.clone());
        }
        (out, delegated)
    }

    /// A loop: `run` once per item with the item's variables (the loop
    /// and index variables, `ansible_loop` when extended), results shaped
    /// as ansible-core's `_run_loop` shapes them.
    fn looped(
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
            let cx = super::lookup::Ctx {
                templar: &self.templar,
                vars,
                depth: 0,
                with_action: Some(&t.action),
            };
            let terms = match self.templar.value(src, vars) {
                Ok(t) => t,
                Err(e) => return error_outcome(&format!("Task failed: {e}"), no_log, false),
            };
            match super::lookup::run_with(name, terms, &cx) {
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
        let loop_var = lc
            .get("loop_var")
            .and_then(Value::as_str)
            .unwrap_or("item")
            .to_owned();
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
            iv.push_one(&loop_var, item.clone());
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
        if all_skipped {
            reg.insert(
                "msg".into(),
                if n == 0 {
                    "No items in the list"
                } else {
                    "All items skipped"
                }
                .into(),
            );
            if n == 0 {
                reg.insert("skipped_reason".into(), "No items in the list".into());
            }
        }
        reg.entry("changed").or_insert(false.into());
        reg.insert("_ansible_no_log".into(), no_log.into());
        for (k, v) in hoisted {
            reg.insert(k.into(), Value::Array(v));
        }
        let status = if failed {
            Status::Failed
        } else if all_skipped {
            Status::Skipped
        } else if changed {
            Status::Changed
        } else {
            Status::Ok
        };
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
    fn one(
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
                rv.push_one(reg, out.register.clone());
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
                    uv.push_one(reg, out.register.clone());
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
                std::thread::sleep(Duration::from_secs_f64(delay.clamp(0.0, 3600.0)));
                continue;
            }
            return out.refresh(no_log);
        }
    }

    /// Adds the warnings templating recorded (a lookup's `errors='warn'`)
    /// to the result.
    fn add_warnings(out: &mut Outcome, vars: &Vars) {
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

    /// The task's arguments templated, a failure as ansible-core words it
    /// (`Error while resolving value for '<argument>'`).
    fn task_args(&self, t: &TaskDef, vars: &Vars) -> Result<Value, String> {
        let action = match t.action.contains('.') {
            true => t.action.clone(),
            false => format!("ansible.builtin.{}", t.action),
        };
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
        Ok(Value::Object(m))
    }

    /// Templated args, then the action.
    fn execute(
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
        let a = t.short_action();
        match a {
            "debug" => {
                let mut m = Map::new();
                if let Some(var) = args.get("var") {
                    let name = var.as_str().map_or_else(|| var.to_string(), str::to_owned);
                    let v = match self.templar.debug_var(&name, vars) {
                        Ok(v) => v,
                        Err(e) => {
                            return error_outcome(
                                &format!(
                                    "Task failed: Error while resolving `var` expression: {e}"
                                ),
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
            "set_fact" => {
                let Value::Object(mut o) = args else {
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
                    let k = match self.templar.string(&k, vars) {
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
                    Some(d) if self.facts_to_delegate(t, vars, delegated) => self.host(d),
                    _ => h.clone(),
                };
                owner.registered.lock().extend(o.clone());
                let mut m = Map::new();
                m.insert("ansible_facts".into(), Value::Object(o));
                m.insert("changed".into(), false.into());
                finish_outcome(Status::Ok, m, no_log)
            }
            "include_vars" => {
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
            "assert" => self.assert(&args, t, vars, no_log),
            "fail" => {
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
            _ => self.module(ctx, t, h, vars, args, no_log, delegated),
        }
    }

    fn assert(&self, args: &Value, _t: &TaskDef, vars: &Vars, no_log: bool) -> Outcome {
        let that = match args.get("that") {
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
            None => return error_outcome("conditional required in \"that\" string", no_log, false),
        };
        let quiet = args.get("quiet").is_some_and(bool_val);
        let fail_msg = args.get("fail_msg").or_else(|| args.get("msg")).cloned();
        let mut m = Map::new();
        for c in &that {
            match self.templar.cond(c, vars) {
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

    #[allow(clippy::too_many_arguments)]
    fn module(
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
        if matches!(short(&action), "template") {
            // The template file sees the task's variables (templated on
            // access, `hostvars` too), its lookups and search paths.
            task = task.template_hook(Arc::new(PlayHook::new(&self.templar, vars)));
        }
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
                }
            }
            Err(e) => error_outcome(&e.to_string(), no_log, false),
        }
    }

    /// Whether a delegated task's facts (`set_fact`'s too) go to the
    /// delegate: `delegate_facts`. Otherwise they are the inventory host's.
    fn facts_to_delegate(&self, t: &TaskDef, vars: &Vars, delegated: Option<&str>) -> bool {
        delegated.is_some() && self.kw_bool(&t.kw.delegate_facts, vars) == Some(true)
    }

    /// `_ansible_delegated_vars` of a task delegated to `d`: the delegate's
    /// `ansible_host` (its name if unset), `ansible_port` and `ansible_user`
    /// (null if unset) with their types, and `ansible_connection` if set.
    /// 2.20 keeps only the connection for a `local` one (that plugin has no
    /// host/port/user options).
    fn delegated_vars(&self, ctx: &PlayCtx<'_>, t: &TaskDef, d: &str) -> Value {
        let tvars = self.vars_for(ctx, t, &self.host(d));
        let get = |k: &str| -> Option<Value> {
            match tvars.get(k)? {
                Value::Null => None,
                Value::String(s) if s.contains("{{") => Some(
                    self.templar
                        .value(&Value::String(s.clone()), &tvars)
                        .unwrap_or(Value::String(s.clone())),
                ),
                v => Some(v.clone()),
            }
        };
        let connection = get("ansible_connection");
        if self.runner.source().version_at_least(2, 20)
            && connection.as_ref().and_then(Value::as_str) == Some("local")
        {
            return json!({ "ansible_connection": connection });
        }
        let mut m = Map::new();
        m.insert(
            "ansible_host".into(),
            get("ansible_host").unwrap_or_else(|| Value::String(d.to_owned())),
        );
        m.insert(
            "ansible_port".into(),
            get("ansible_port").unwrap_or(Value::Null),
        );
        m.insert(
            "ansible_user".into(),
            get("ansible_user").unwrap_or(Value::Null),
        );
        if let Some(c) = connection {
            m.insert("ansible_connection".into(), c);
        }
        Value::Object(m)
    }

    fn var_str(vars: &Vars, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| vars.get(k)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    }

    /// The context for `h` with this task's become, connecting on first use.
    /// `h` is the host the task runs on (a delegate's too); results and
    /// messages name `inventory_name`, the host the task is for.
    fn target(
        &self,
        t: &TaskDef,
        h: &Arc<HostState>,
        vars: &Vars,
        inventory_name: &str,
    ) -> Result<Target, TargetError> {
        // Connection variables may be templates.
        let get = |keys: &[&str]| -> Option<String> {
            let raw = Self::var_str(vars, keys)?;
            Some(self.templar.string(&raw, vars).unwrap_or(raw))
        };
        // Variables, then keywords, then the command line / ansible.cfg.
        let keyword = |v: &Option<Value>| -> Option<String> {
            match self.templar.value(v.as_ref()?, vars).ok()? {
                Value::String(s) if !s.is_empty() => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let conn = get(&["ansible_connection"])
            .or_else(|| keyword(&t.kw.connection))
            .unwrap_or_else(|| self.opts.connection.clone());
        let conn = if conn == "smart" {
            "ssh".to_owned()
        } else {
            conn
        };
        let how = Login {
            user: get(&["ansible_user", "ansible_ssh_user"])
                .or_else(|| keyword(&t.kw.remote_user))
                .or_else(|| self.opts.remote_user.clone()),
            port: get(&["ansible_port", "ansible_ssh_port"]).or_else(|| keyword(&t.kw.port)),
            connection: conn.clone(),
        };
        let addr = get(&["ansible_host", "ansible_ssh_host"]).unwrap_or_else(|| h.name.clone());
        let base = self.base_context(h, &how, &addr, &get)?;
        let become_on = Self::var_str(vars, &["ansible_become"])
            .map(|s| bool_val(&Value::String(s)))
            .or_else(|| self.kw_bool(&t.kw.become_, vars))
            .unwrap_or(self.opts.become_.0);
        let login_user = how.user.or_else(|| Some(mitogen_core::layer::user_name()));
        let ctx = if become_on {
            let user = get(&["ansible_become_user"])
                .or_else(|| {
                    t.kw.become_user
                        .as_ref()
                        .and_then(|v| self.templar.value(v, vars).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| self.opts.become_.1.clone());
            let method = get(&["ansible_become_method"])
                .or_else(|| {
                    t.kw.become_method
                        .as_ref()
                        .and_then(|v| self.templar.value(v, vars).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| self.opts.become_.2.clone());
            let pw = get(&[
                "ansible_become_password",
                "ansible_become_pass",
                "ansible_sudo_pass",
            ])
            .or_else(|| self.opts.become_password.clone());
            let to = self.opts.connect_timeout;
            let r = match method.as_str() {
                "sudo" => {
                    let mut m = Sudo::new(&user).connect_timeout(to);
                    if let Some(p) = &pw {
                        m = m.password(p);
                    }
                    self.pool.get(&self.router, &m, Some(&base))
                }
                "su" => {
                    let mut m = Su::new(&user).connect_timeout(to);
                    if let Some(p) = &pw {
                        m = m.password(p);
                    }
                    self.pool.get(&self.router, &m, Some(&base))
                }
                "doas" => {
                    let mut m = Doas::new(&user).connect_timeout(to);
                    if let Some(p) = &pw {
                        m = m.password(p);
                    }
                    self.pool.get(&self.router, &m, Some(&base))
                }
                other => return Err(format!("unsupported become method '{other}'").into()),
            };
            let c = r.map_err(|e| {
                // What ansible-core's ssh connection raises, as AnsibleError
                // (a failed task, not an unreachable host), when become's
                // output says so.
                use mitogen_ssh::AuthError;
                match e.downcast_ref::<AuthError>() {
                    Some(AuthError::WrongPassword { .. }) if conn != "local" => {
                        TargetError::Failed(format!("Task failed: Incorrect {method} password"))
                    }
                    Some(AuthError::PasswordRequired { .. }) if conn != "local" => {
                        TargetError::Failed(format!("Task failed: Missing {method} password"))
                    }
                    _ => TargetError::Unreachable(format!(
                        "Failed to become {user} via {method}: {e}"
                    )),
                }
            })?;
            (c, user != "root" && Some(&user) != login_user.as_ref())
        } else {
            (base, false)
        };
        let mut target = Target::new(&ctx.0, inventory_name).become_unprivileged(ctx.1);
        target = if conn == "local" {
            // ansible-core runs local commands in the loader's base dir:
            // the play's playbook directory.
            if let Some(Value::String(d)) = vars.get("playbook_dir") {
                target = target.local_dir(d.clone());
            }
            target.connection(Connection::Local)
        } else {
            target.connection(Connection::Ssh { host: addr })
        };
        // A discovered interpreter is a host fact once a task reported it
        // (as in ansible-core): later tasks, become users and run_once
        // siblings use it without discovering again.
        let discovered = h
            .facts
            .lock()
            .get("discovered_interpreter_python")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let py = get(&["ansible_python_interpreter"])
            .or(discovered)
            .or_else(|| self.opts.interpreter_python.clone());
        if let Some(p) = py {
            target = target.python_interpreter(&p);
        }
        let pipelining = get(&["ansible_pipelining", "ansible_ssh_pipelining"])
            .map(|s| bool_val(&Value::String(s)))
            .unwrap_or(self.opts.pipelining);
        target = target.pipelining(pipelining);
        for (k, v) in vars_interpreters(vars) {
            target = target.interpreter(&k, &v);
        }
        Ok(target)
    }

    fn base_context(
        &self,
        h: &Arc<HostState>,
        how: &Login,
        addr: &str,
        get: &dyn Fn(&[&str]) -> Option<String>,
    ) -> Result<Context, String> {
        let key = format!("{}\0{:?}\0{:?}", how.connection, how.user, how.port);
        if let Some(r) = h.base.lock().get(&key) {
            match r {
                Ok(c) if self.router.is_connected(c.id()) => return Ok(c.clone()),
                Ok(_) => {}
                Err(e) => return Err(e.clone()),
            }
        }
        let _g = h.connecting.lock();
        if let Some(Ok(c)) = h.base.lock().get(&key) {
            if self.router.is_connected(c.id()) {
                return Ok(c.clone());
            }
        }
        let conn = how.connection.as_str();
        let r = match conn {
            "local" => self
                .router
                .connect(&Local::new())
                .map_err(|e| format!("Failed to start a local agent: {e}")),
            "ssh" | "smart" | "paramiko" | "mitogen_ssh" => {
                let mut s = Ssh::new(addr).connect_timeout(self.opts.connect_timeout);
                if let Some(p) = &how.port {
                    let p: u16 = p
                        .parse()
                        .map_err(|_| format!("invalid ansible_port '{p}'"))?;
                    s = s.port(p);
                }
                if let Some(u) = &how.user {
                    s = s.user(u);
                }
                if let Some(k) = get(&["ansible_ssh_private_key_file", "ansible_private_key_file"])
                    .map(PathBuf::from)
                    .or_else(|| self.opts.private_key_file.clone())
                {
                    s = s.identity_file(k);
                }
                if let Some(pw) = get(&[
                    "ansible_password",
                    "ansible_ssh_pass",
                    "ansible_ssh_password",
                ])
                .or_else(|| self.opts.connection_password.clone())
                {
                    s = s.password(&pw);
                }
                if !self.opts.host_key_checking {
                    s = s.host_key_checking(HostKeyChecking::Ignore);
                }
                let mut extra = self.opts.ssh_args.clone();
                for k in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
                    if let Some(a) = get(&[k]) {
                        extra.extend(super::util::shlex_split(&a)?);
                    }
                }
                for a in extra.iter().filter(|a| {
                    !a.starts_with("-oControl")
                        && !a.contains("ControlPersist")
                        && !a.contains("ControlMaster")
                }) {
                    s = s.arg(a);
                }
                s = s.name(&format!("ssh.{}", h.name));
                if self.opts.multiplex {
                    s = s.multiplex(Duration::from_secs(60));
                    let key = format!("{:?}@{addr}:{:?}", how.user, how.port);
                    let gate = self.masters.lock().entry(key).or_default().clone();
                    let mut up = gate.lock();
                    if *up {
                        drop(up);
                        self.router.connect(&s)
                    } else {
                        let r = self.router.connect(&s);
                        *up = r.is_ok();
                        r
                    }
                    .map_err(|e| format!("Failed to connect to the host via ssh: {e}"))
                } else {
                    self.router
                        .connect(&s)
                        .map_err(|e| format!("Failed to connect to the host via ssh: {e}"))
                }
            }
            other => Err(format!(
                "unsupported connection plugin '{other}' (supported: ssh, local)"
            )),
        };
        h.base.lock().insert(key, r.clone());
        r
    }
}

fn vars_interpreters(vars: &Vars) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in ["perl", "ruby", "bash", "sh", "node"] {
        if let Some(Value::String(p)) = vars.get(&format!("ansible_{name}_interpreter")) {
            out.push((name.to_owned(), p.clone()));
        }
    }
    out
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// ansible-core's words for a conditional that could not be evaluated
/// (`failed_when_result`, `changed_when_result`).
fn when_error(e: &TemplateError) -> String {
    format!("Error while evaluating conditional: {e}")
}

/// The task failure for a `when:` or `assert` conditional that could not
/// be evaluated.
fn cond_error(e: &TemplateError) -> String {
    format!("Task failed: {}", when_error(e))
}

fn strip_omit(v: Value) -> Value {
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

fn gather_task(play: &Play) -> TaskDef {
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

/// ansible-core's `validate_variable_name`: an ASCII identifier that is
/// not one of Jinja's names (`true`, `None`, `not`, ...).
fn valid_variable_name(k: &str) -> bool {
    let mut cs = k.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            k,
            "true" | "false" | "none" | "True" | "False" | "None" | "not"
        )
}

/// What one include brings in (a file, or the role when `None`), for
/// which hosts, with which item's loop variables.
struct IncludeGroup {
    file: Option<PathBuf>,
    vars: Map<String, Value>,
    hosts: Vec<Arc<HostState>>,
}

/// The loop variables `looped` set for this item (what an included file's
/// tasks see of their include's loop).
fn loop_vars(t: &TaskDef, iv: &Vars) -> Map<String, Value> {
    let lc = &t.loop_control;
    let loop_var = lc.get("loop_var").and_then(Value::as_str).unwrap_or("item");
    let index_var = lc.get("index_var").and_then(Value::as_str);
    let keys = [
        Some(loop_var),
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

fn finish_outcome(status: Status, mut reg: Map<String, Value>, no_log: bool) -> Outcome {
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
    }
}

fn skipped_outcome(_t: &TaskDef, no_log: bool, conds: &[Value]) -> Outcome {
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

fn error_outcome(msg: &str, no_log: bool, _ignore: bool) -> Outcome {
    let mut m = Map::new();
    m.insert("msg".into(), msg.into());
    m.insert("changed".into(), false.into());
    m.insert("exception".into(), NO_TRACEBACK.into());
    finish_outcome(Status::Failed, m, no_log)
}

/// ansible-core's result for a loop that has no items to run: no
/// `changed`.
fn no_items_outcome(msg: &str, no_log: bool) -> Outcome {
    let mut out = error_outcome(msg, no_log, false);
    out.remove("changed");
    if let Value::Object(c) = &mut out.callback {
        c.shift_remove("changed");
    }
    out
}

impl Outcome {
    fn set(&mut self, k: &str, v: Value) {
        if let Value::Object(m) = &mut self.register {
            m.insert(k.to_owned(), v);
        }
    }

    fn set_default(&mut self, k: &str, v: Value) {
        if let Value::Object(m) = &mut self.register {
            m.entry(k.to_owned()).or_insert(v);
        }
    }

    fn remove(&mut self, k: &str) {
        if let Value::Object(m) = &mut self.register {
            m.shift_remove(k);
        }
    }

    /// Status and callback view recomputed from the register view.
    fn refresh(self, no_log: bool) -> Self {
        let Value::Object(m) = self.register else {
            return self;
        };
        // ansible-core's TaskResult.is_failed: failed_when's verdict, when
        // it gave one, over `failed` (an until that ran out sets that).
        let failed = match m.get("failed_when_result") {
            Some(f) => truthy(f),
            None => m.get("failed").is_some_and(truthy),
        };
        let skipped = m.get("skipped").is_some_and(truthy);
        let changed = m.get("changed").is_some_and(truthy);
        let status = if self.status == Status::Unreachable {
            Status::Unreachable
        } else if failed {
            Status::Failed
        } else if skipped {
            Status::Skipped
        } else if changed {
            Status::Changed
        } else {
            Status::Ok
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
        }
    }
}

/// `serial:` batches.
fn batches(hosts: &[String], serial: &[Value]) -> Vec<Vec<String>> {
    if serial.is_empty() {
        return vec![hosts.to_vec()];
    }
    let n = hosts.len();
    let sizes: Vec<usize> = serial
        .iter()
        .map(|s| {
            let v = match s {
                Value::Number(x) => x.as_u64().unwrap_or(0) as usize,
                Value::String(p) if p.ends_with('%') => {
                    let pct: f64 = p.trim_end_matches('%').parse().unwrap_or(100.0);
                    ((n as f64) * pct / 100.0) as usize
                }
                Value::String(p) => p.parse().unwrap_or(0),
                _ => 0,
            };
            if v == 0 { n.max(1) } else { v }
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < n {
        let s = sizes[k.min(sizes.len() - 1)].max(1);
        out.push(hosts[i..(i + s).min(n)].to_vec());
        i += s;
        k += 1;
    }
    out
}
