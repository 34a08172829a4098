//! Playbooks, task files and roles, parsed and checked before anything
//! runs: every keyword is known or refused with its file:line.

use super::PlayError;
use super::inventory::{read_text, read_vars_file};
use super::template::Templar;
use super::util::{parse_kv, parse_kv_raw};
use super::yaml::{self, Loc, Node, Y};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Task keywords understood here.
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "action",
    "local_action",
    "args",
    "register",
    "when",
    "loop",
    "loop_control",
    "until",
    "retries",
    "delay",
    "async",
    "poll",
    "check_mode",
    "diff",
    "no_log",
    "environment",
    "become",
    "become_user",
    "become_method",
    "vars",
    "ignore_errors",
    "ignore_unreachable",
    "changed_when",
    "failed_when",
    "notify",
    "listen",
    "tags",
    "delegate_to",
    "run_once",
    "any_errors_fatal",
    "timeout",
    "remote_user",
    "connection",
    "port",
    "delegate_facts",
    "throttle",
    "module_defaults",
    "collections",
];
/// Ansible keywords refused with a clear error (not implemented).
const UNSUPPORTED_KEYWORDS: &[&str] = &["debugger", "become_exe", "become_flags"];
const BLOCK_KEYWORDS: &[&str] = &["block", "rescue", "always"];
/// `action` by its fully qualified name (a short one is `ansible.builtin`'s).
pub(crate) fn fqcn(action: &str) -> String {
    if action.contains('.') {
        action.to_owned()
    } else {
        format!("ansible.builtin.{action}")
    }
}

/// Actions given words that are not `k=v` (ansible-core's
/// `RAW_PARAM_MODULES`: the free-form modules and these).
pub(crate) fn takes_raw_params(short_name: &str) -> bool {
    FREE_FORM.contains(&short_name)
        || matches!(
            short_name,
            "include_vars"
                | "include_tasks"
                | "include_role"
                | "import_tasks"
                | "import_role"
                | "add_host"
                | "group_by"
                | "set_fact"
                | "meta"
        )
}

/// Modules taking a free-form string.
pub(crate) const FREE_FORM: &[&str] = &[
    "command",
    "shell",
    "raw",
    "script",
    "win_shell",
    "win_command",
];

/// Keywords inherited from plays and blocks down to tasks.
#[derive(Debug, Clone, Default)]
pub struct Keywords {
    /// `when:` conditions, outermost first.
    pub when: Vec<(Value, Loc)>,
    /// `become:`.
    pub become_: Option<Value>,
    /// `become_user:`.
    pub become_user: Option<Value>,
    /// `become_method:`.
    pub become_method: Option<Value>,
    /// `vars:` (inner ones override).
    pub vars: Map<String, Value>,
    /// `ignore_errors:`.
    pub ignore_errors: Option<Value>,
    /// `ignore_unreachable:`.
    pub ignore_unreachable: Option<Value>,
    /// `check_mode:`.
    pub check_mode: Option<Value>,
    /// `diff:`.
    pub diff: Option<Value>,
    /// `no_log:`.
    pub no_log: Option<Value>,
    /// `environment:` (merged, inner wins).
    pub environment: Vec<Value>,
    /// `tags:` (union).
    pub tags: Vec<String>,
    /// `delegate_to:`.
    pub delegate_to: Option<Value>,
    /// `run_once:`.
    pub run_once: Option<Value>,
    /// `any_errors_fatal:`.
    pub any_errors_fatal: Option<Value>,
    /// `remote_user:` (an `ansible_user` variable wins over it).
    pub remote_user: Option<Value>,
    /// `connection:` (`ssh` or `local`; an `ansible_connection` variable
    /// wins over it).
    pub connection: Option<Value>,
    /// `port:` (an `ansible_port` variable wins over it).
    pub port: Option<Value>,
    /// `delegate_facts:`: a delegated task's facts go to the delegate.
    pub delegate_facts: Option<Value>,
    /// `throttle:`: at most this many hosts run the task at once.
    pub throttle: Option<Value>,
    /// `module_defaults:`, outermost first: per module (FQCN or short
    /// name), arguments a task of that module gets unless it gives them.
    pub module_defaults: Vec<Map<String, Value>>,
    /// `collections:`: where short module names are looked up first
    /// (then `ansible.legacy`: `library/` and ansible-core's own).
    pub collections: Option<Vec<String>>,
}

impl Keywords {
    /// `self` (outer) with `inner` applied on top.
    pub fn inherit(&self, inner: &Self) -> Self {
        let pick = |o: &Option<Value>, i: &Option<Value>| i.clone().or_else(|| o.clone());
        let mut vars = self.vars.clone();
        for (k, v) in &inner.vars {
            vars.insert(k.clone(), v.clone());
        }
        let mut tags = self.tags.clone();
        for t in &inner.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let mut when = self.when.clone();
        when.extend(inner.when.iter().cloned());
        let mut environment = self.environment.clone();
        environment.extend(inner.environment.iter().cloned());
        Self {
            when,
            become_: pick(&self.become_, &inner.become_),
            become_user: pick(&self.become_user, &inner.become_user),
            become_method: pick(&self.become_method, &inner.become_method),
            vars,
            ignore_errors: pick(&self.ignore_errors, &inner.ignore_errors),
            ignore_unreachable: pick(&self.ignore_unreachable, &inner.ignore_unreachable),
            check_mode: pick(&self.check_mode, &inner.check_mode),
            diff: pick(&self.diff, &inner.diff),
            no_log: pick(&self.no_log, &inner.no_log),
            environment,
            tags,
            delegate_to: pick(&self.delegate_to, &inner.delegate_to),
            run_once: pick(&self.run_once, &inner.run_once),
            any_errors_fatal: pick(&self.any_errors_fatal, &inner.any_errors_fatal),
            remote_user: pick(&self.remote_user, &inner.remote_user),
            connection: pick(&self.connection, &inner.connection),
            port: pick(&self.port, &inner.port),
            delegate_facts: pick(&self.delegate_facts, &inner.delegate_facts),
            throttle: pick(&self.throttle, &inner.throttle),
            collections: inner
                .collections
                .clone()
                .or_else(|| self.collections.clone()),
            module_defaults: {
                let mut d = self.module_defaults.clone();
                d.extend(inner.module_defaults.iter().cloned());
                d
            },
        }
    }
}

/// A role as loaded: its directory, defaults, vars and handlers.
#[derive(Debug, Clone)]
pub struct Role {
    /// The role's name as shown (`ns.coll.role` for a collection's).
    pub name: String,
    /// The collection it is from (`ns.coll`), if any.
    pub collection: Option<String>,
    /// Its directory.
    pub path: PathBuf,
    /// `defaults/main.yml`.
    pub defaults: Arc<Map<String, Value>>,
    /// `vars/main.yml` plus role parameters.
    pub vars: Arc<Map<String, Value>>,
    /// What makes two uses of a role the same role (ansible-core's
    /// `Role._get_hash_dict`: path, parameters, `tasks_from`, whether
    /// included): a host runs it once unless it allows duplicates.
    pub key: String,
    /// `allow_duplicates` (meta/main.yml; `include_role`'s own, default
    /// yes, for the role it includes).
    pub allow_duplicates: bool,
}

impl Role {
    /// `role_name`: the name without its collection.
    pub fn short_name(&self) -> &str {
        match &self.collection {
            Some(c) => self
                .name
                .strip_prefix(c.as_str())
                .and_then(|n| n.strip_prefix('.'))
                .unwrap_or(&self.name),
            None => &self.name,
        }
    }

    /// The task ansible-core appends to a role's tasks (`role_complete`):
    /// a host that ran any of them has run the role.
    fn complete_marker(self: &Arc<Self>, kw: &Keywords, loc: &Loc) -> TaskDef {
        TaskDef::new(
            "meta",
            serde_json::json!({"_raw_params": "role_complete"}),
            kw.clone(),
            Some(self.clone()),
            self.path.clone(),
            loc.clone(),
        )
    }
}

/// `p` absolute (as it is where the current dir is unknown).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// ansible-core's `is_possibly_all_template`: `s` starts and ends with
/// Jinja delimiters.
fn all_template(s: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|d| s.starts_with(d))
        && ["}}", "%}", "#}"].iter().any(|d| s.ends_with(d))
}

/// One task.
#[derive(Debug, Clone)]
pub struct TaskDef {
    /// `name:` (untemplated), or `None`.
    pub name: Option<String>,
    /// The module or action.
    pub action: String,
    /// Its arguments (untemplated): an object, or a string for free form.
    pub args: Value,
    /// Arguments given as one template that must render to a mapping
    /// (`args: '{{ x }}'`, `add_host: '{{ y }}'`), in ansible-core's
    /// order: each later one, then [`TaskDef::args`], wins over those before.
    pub arg_templates: Vec<String>,
    /// Why mitogen-play cannot run this task's action, for a task kept
    /// because a condition may skip it: it fails if it is reached.
    pub unsupported: Option<String>,
    /// Inherited keywords.
    pub kw: Keywords,
    /// `register:`.
    pub register: Option<String>,
    /// The loop source (`loop:` / `with_*:`), and which.
    pub loop_: Option<(Value, String)>,
    /// `loop_control:`.
    pub loop_control: Map<String, Value>,
    /// `until:`.
    pub until: Option<Value>,
    /// `retries:`.
    pub retries: Option<Value>,
    /// `delay:`.
    pub delay: Option<Value>,
    /// `async:`.
    pub async_: Option<Value>,
    /// `poll:`.
    pub poll: Option<Value>,
    /// `changed_when:`.
    pub changed_when: Option<Value>,
    /// `failed_when:`.
    pub failed_when: Option<Value>,
    /// `notify:`.
    pub notify: Vec<String>,
    /// `listen:` (handlers).
    pub listen: Vec<String>,
    /// `timeout:`.
    pub timeout: Option<Value>,
    /// The role this task came from.
    pub role: Option<Arc<Role>>,
    /// `include_role`: the role's tasks, loaded at parse time.
    pub included: Option<Arc<Vec<Item>>>,
    /// The directory relative paths resolve against (task file's).
    pub base: PathBuf,
    /// Where it is.
    pub loc: Loc,
    /// This task's identity (ansible-core's `_uuid`): each task the parser
    /// or the executor makes has its own; a clone is the same task.
    pub id: TaskId,
}

/// A task's identity: see [`TaskDef::id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(u64);

impl TaskId {
    /// A new identity, never handed out before in this process.
    fn fresh() -> Self {
        // Identity only (no request state): a process-wide counter.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl TaskDef {
    /// A task running `action` with `args` and nothing else set (no name,
    /// loop, conditions or notifications): what the parser fills in, and
    /// the tasks ansible-core adds itself.
    pub fn new(
        action: &str,
        args: Value,
        kw: Keywords,
        role: Option<Arc<Role>>,
        base: PathBuf,
        loc: Loc,
    ) -> Self {
        Self {
            name: None,
            action: action.to_owned(),
            args,
            arg_templates: Vec::new(),
            unsupported: None,
            kw,
            register: None,
            loop_: None,
            loop_control: Map::new(),
            until: None,
            retries: None,
            delay: None,
            async_: None,
            poll: None,
            changed_when: None,
            failed_when: None,
            notify: Vec::new(),
            listen: Vec::new(),
            timeout: None,
            role,
            included: None,
            base,
            loc,
            id: TaskId::fresh(),
        }
    }

    /// The task's attributes as ansible-core's `Task.serialize()` gives
    /// them to `rescue:` (`ansible_failed_task`): what the playbook says,
    /// untemplated. ansible-core's internal ones (`uuid`, `finalized`,
    /// `squashed`) are left out.
    pub fn serialize(&self) -> Value {
        let opt = |v: &Option<Value>| v.clone().unwrap_or(Value::Null);
        let or = |v: &Option<Value>, d: Value| v.clone().unwrap_or(d);
        let list = |v: &Option<Value>| match v {
            None => Value::Array(Vec::new()),
            Some(Value::Array(a)) => Value::Array(a.clone()),
            Some(x) => Value::Array(vec![x.clone()]),
        };
        let resolved = if self.action.contains('.') {
            self.action.clone()
        } else {
            format!("ansible.builtin.{}", self.action)
        };
        let mut lc = Map::new();
        lc.insert("loop_var".into(), "item".into());
        lc.insert("index_var".into(), Value::Null);
        lc.insert("label".into(), Value::Null);
        lc.insert("pause".into(), 0.0.into());
        lc.insert("extended".into(), Value::Null);
        lc.insert("extended_allitems".into(), true.into());
        for (k, v) in &self.loop_control {
            lc.insert(k.clone(), v.clone());
        }
        serde_json::json!({
            "_resolved_action": resolved,
            "action": self.action,
            "any_errors_fatal": or(&self.kw.any_errors_fatal, false.into()),
            "args": self.args,
            "async": or(&self.async_, 0.into()),
            "become": or(&self.kw.become_, false.into()),
            "become_method": or(&self.kw.become_method, "sudo".into()),
            "become_user": opt(&self.kw.become_user),
            "changed_when": list(&self.changed_when),
            "check_mode": or(&self.kw.check_mode, false.into()),
            "delay": or(&self.delay, 5.0.into()),
            "delegate_facts": opt(&self.kw.delegate_facts),
            "delegate_to": opt(&self.kw.delegate_to),
            "diff": or(&self.kw.diff, false.into()),
            "failed_when": list(&self.failed_when),
            "ignore_errors": opt(&self.kw.ignore_errors),
            "ignore_unreachable": opt(&self.kw.ignore_unreachable),
            "loop": self.loop_.as_ref().filter(|(_, k)| k == "loop").map_or(Value::Null, |(v, _)| v.clone()),
            "loop_control": lc,
            "loop_with": self.loop_.as_ref().and_then(|(_, k)| k.strip_prefix("with_")).map_or(Value::Null, Value::from),
            "name": self.name.clone().unwrap_or_default(),
            "no_log": or(&self.kw.no_log, false.into()),
            "notify": if self.notify.is_empty() { Value::Null } else { self.notify.clone().into() },
            "poll": or(&self.poll, 15.into()),
            "register": self.register.clone().map_or(Value::Null, Value::from),
            "retries": opt(&self.retries),
            "run_once": opt(&self.kw.run_once),
            "tags": self.kw.tags,
            "timeout": or(&self.timeout, 0.into()),
            "until": list(&self.until),
            "vars": self.kw.vars,
            "when": self.kw.when.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(),
        })
    }

    /// A task ansible-core adds itself (a role's `role_complete`): never
    /// listed, displayed or started at.
    pub fn is_implicit(&self) -> bool {
        self.short_action() == "meta"
            && self.name.is_none()
            && raw_param(&self.args).as_deref() == Some("role_complete")
    }

    /// The short action name (`ansible.builtin.` / `ansible.legacy.` removed).
    pub fn short_action(&self) -> &str {
        short(&self.action)
    }

    /// An `include_tasks` or `include_role` (whose tasks come in when it
    /// runs).
    pub fn is_include(&self) -> bool {
        self.short_action() == "include_tasks" || self.included.is_some()
    }

    /// `loop_control.loop_var` (default `item`).
    pub fn loop_var(&self) -> &str {
        self.loop_control
            .get("loop_var")
            .and_then(Value::as_str)
            .unwrap_or("item")
    }

    /// ansible-core's `Task.get_name()`: the untemplated name (else the
    /// action), after `role : ` for a role's task. What `--list-tasks`
    /// shows and `--start-at-task` matches.
    pub fn list_name(&self) -> String {
        let base = self.name.as_deref().unwrap_or(&self.action);
        match &self.role {
            Some(r) => format!("{} : {base}", r.name),
            None => base.to_owned(),
        }
    }
}

/// `ansible.builtin.x` → `x`.
pub fn short(a: &str) -> &str {
    a.strip_prefix("ansible.builtin.")
        .or_else(|| a.strip_prefix("ansible.legacy."))
        .unwrap_or(a)
}

/// A task or a block.
#[derive(Debug, Clone)]
pub enum Item {
    /// A task.
    Task(Box<TaskDef>),
    /// `block:` with `rescue:` and `always:`.
    Block(Box<BlockDef>),
}

/// `block`/`rescue`/`always`; keywords are already pushed into the tasks.
#[derive(Debug, Clone)]
pub struct BlockDef {
    /// The tasks.
    pub block: Vec<Item>,
    /// Run for hosts that failed in `block`.
    pub rescue: Vec<Item>,
    /// Run for every host that entered.
    pub always: Vec<Item>,
    /// `name:`.
    pub name: Option<String>,
    /// Where.
    pub loc: Loc,
}

/// The linear or free strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Each task on every host before the next.
    #[default]
    Linear,
    /// Each host runs ahead.
    Free,
}

/// One play.
#[derive(Debug, Clone)]
pub struct Play {
    /// `name:`.
    pub name: String,
    /// `hosts:` pattern (untemplated).
    pub hosts: String,
    /// `gather_facts:` (`None`: not given; `gathering` decides).
    pub gather_facts: Option<bool>,
    /// Play keywords, inherited by every task.
    pub kw: Keywords,
    /// `vars_files:` (untemplated), with locations.
    pub vars_files: Vec<(Value, Loc)>,
    /// `serial:` batch sizes (numbers or percentages).
    pub serial: Vec<Value>,
    /// `strategy:`.
    pub strategy: Strategy,
    /// `max_fail_percentage:`.
    pub max_fail_percentage: Option<f64>,
    /// `order:` of the play's hosts: `inventory` (the default),
    /// `reverse_inventory`, `sorted`, `reverse_sorted`, `shuffle`.
    pub order: String,
    /// pre_tasks, roles' tasks, tasks, post_tasks, in order (with the
    /// handler flush points between sections).
    pub sections: Vec<Vec<Item>>,
    /// Every handler (play's and roles').
    pub handlers: Vec<TaskDef>,
    /// The playbook's directory.
    pub base: PathBuf,
    /// Where.
    pub loc: Loc,
    /// `gather_subset`, `gather_timeout`, `fact_path`: arguments of the
    /// play's facts gathering.
    pub gather_args: Map<String, Value>,
}

/// Where to look for roles and what the parse may refer to.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Extra role directories (`roles_path`).
    pub roles_path: Vec<PathBuf>,
    /// Where collections are (each holding `ansible_collections/`): roles
    /// named by FQCN or through `collections:` are found there.
    pub collections_paths: Vec<PathBuf>,
    /// The modules the runner runs: each task's module is checked against
    /// it as the playbook is read, and a role's `library/` joins it when
    /// the role loads (as in ansible-core); `None`: no check.
    pub modules: Option<mitogen_ansible::ModuleSource>,
    /// Serves the filter, test and lookup plugins mitogen-play lacks (a
    /// template naming one that neither has is refused at parse time);
    /// `None`: only the native ones exist.
    pub plugins: Option<Arc<crate::plugins::PluginHost>>,
}

/// Why a task's module or action cannot run.
#[derive(Debug, Clone)]
enum Refusal {
    /// No such module (the message says where it was looked for).
    NotFound(String),
    /// It exists, but an action plugin stands in front of it that
    /// mitogen-play does not implement: running the module bare would do
    /// something else than the playbook says (the message names it).
    Unsupported(String),
}

/// Whether `name` can run from `source` (`Err` says why not).
fn check_module(source: &mitogen_ansible::ModuleSource, name: &str) -> Result<(), Refusal> {
    if let Some(why) = source.unsupported_action(name) {
        return Err(Refusal::Unsupported(why));
    }
    source
        .find(name)
        .map(|_| ())
        .map_err(|e| Refusal::NotFound(e.to_string()))
}

struct Parser<'a> {
    opts: &'a ParseOptions,
    templar: Templar,
    play_base: PathBuf,
    /// Role stack, to refuse recursive imports.
    depth: usize,
    /// Set for the role an `include_role` loads (its `allow_duplicates`),
    /// taken by that role alone (not by its dependencies).
    including: Option<bool>,
}

fn loc_of(file: &Arc<PathBuf>, line: usize) -> Loc {
    Loc {
        file: file.clone(),
        line,
        col: 0,
    }
}

/// Where node `n` of `file` starts, with its column (a task's origin, as
/// ansible-core's error excerpts show it).
fn loc_at(file: &Arc<PathBuf>, n: &Node) -> Loc {
    Loc {
        col: n.col,
        ..loc_of(file, n.line)
    }
}

/// Reads a playbook file.
///
/// # Errors
/// Syntax errors, unknown or unsupported keywords, filters and tests,
/// unknown modules, missing roles: each with its file:line.
pub fn load_playbook(path: &Path, opts: &ParseOptions) -> Result<Vec<Play>, PlayError> {
    let text = read_text(path)?;
    let doc = yaml::parse_one(&text, path)?;
    let file = Arc::new(path.to_owned());
    let base = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let mut p = Parser {
        opts,
        templar: Templar::with_plugins(opts.plugins.clone()),
        play_base: base.clone(),
        depth: 0,
        including: None,
    };
    let Y::Seq(plays) = &doc.y else {
        return Err(PlayError::at(
            &loc_of(&file, doc.line),
            "a playbook must be a list of plays",
        ));
    };
    let mut out = Vec::new();
    for n in plays {
        if let Some(ip) = n
            .get("import_playbook")
            .or_else(|| n.get("ansible.builtin.import_playbook"))
        {
            let Some(f) = ip.as_str() else {
                return Err(PlayError::at(
                    &loc_of(&file, ip.line),
                    "import_playbook needs a file name",
                ));
            };
            let mut plays = load_playbook(&base.join(f), opts)?;
            p.import_keywords(n, &file, &mut plays)?;
            out.extend(plays);
            continue;
        }
        out.push(p.play(n, &file)?);
    }
    Ok(out)
}

fn as_map<'n>(
    n: &'n Node,
    file: &Arc<PathBuf>,
    what: &str,
) -> Result<&'n [(String, usize, Node)], PlayError> {
    match &n.y {
        Y::Map(m) => Ok(m),
        _ => Err(PlayError::at(
            &loc_of(file, n.line),
            format!("{what} must be a mapping"),
        )),
    }
}

fn bool_of(n: &Node, file: &Arc<PathBuf>, key: &str) -> Result<bool, PlayError> {
    match n.to_json() {
        Value::Bool(b) => Ok(b),
        Value::String(s) if matches!(s.to_lowercase().as_str(), "yes" | "true" | "on" | "1") => {
            Ok(true)
        }
        Value::String(s) if matches!(s.to_lowercase().as_str(), "no" | "false" | "off" | "0") => {
            Ok(false)
        }
        v => Err(PlayError::at(
            &loc_of(file, n.line),
            format!("'{key}' must be a boolean, got {v}"),
        )),
    }
}

fn string_list(n: &Node) -> Vec<String> {
    match n.to_json() {
        Value::Array(a) => a
            .into_iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Value::Null => Vec::new(),
        Value::String(s) => s
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        v => vec![v.to_string()],
    }
}

impl Parser<'_> {
    /// Looks ahead at the templates in `v`: the plugins they name are
    /// resolved now, so the first task that uses one finds it ready. A
    /// template that does not compile or names what nobody has is not an
    /// error here: as under ansible-core, it fails the task that
    /// evaluates it, and a task that never does (`when:` false) runs.
    fn resolve_ahead(&self, v: &Value) {
        match v {
            Value::String(s) => {
                let _ = self.templar.check(s, false);
            }
            Value::Array(a) => a.iter().for_each(|x| self.resolve_ahead(x)),
            Value::Object(o) => o.values().for_each(|x| self.resolve_ahead(x)),
            _ => {}
        }
    }

    /// As [`Parser::resolve_ahead`], for a bare expression (`when:`).
    fn resolve_ahead_cond(&self, v: &Value) {
        match v {
            Value::String(s) => {
                let _ = self.templar.check(s, true);
            }
            Value::Array(a) => a.iter().for_each(|x| self.resolve_ahead_cond(x)),
            _ => {}
        }
    }

    /// Common keywords of plays, blocks and tasks.
    fn keyword(
        &self,
        kw: &mut Keywords,
        key: &str,
        n: &Node,
        file: &Arc<PathBuf>,
        kline: usize,
    ) -> Result<bool, PlayError> {
        let loc = loc_of(file, kline);
        let v = n.to_json();
        match key {
            "when" => {
                self.resolve_ahead_cond(&v);
                match v {
                    Value::Array(a) => kw.when.extend(a.into_iter().map(|x| (x, loc.clone()))),
                    v => kw.when.push((v, loc)),
                }
            }
            "become" => kw.become_ = Some(v),
            "become_user" => kw.become_user = Some(v),
            "become_method" => {
                if let Some(m) = v.as_str() {
                    if !m.contains("{{") && !matches!(m, "sudo" | "su" | "doas") {
                        return Err(PlayError::at(
                            &loc,
                            format!("unsupported become_method '{m}' (supported: sudo, su, doas)"),
                        ));
                    }
                }
                kw.become_method = Some(v);
            }
            "vars" => match v {
                Value::Object(o) => {
                    self.resolve_ahead(&Value::Object(o.clone()));
                    kw.vars.extend(o);
                }
                Value::Null => {}
                _ => return Err(PlayError::at(&loc, "'vars' must be a mapping")),
            },
            "ignore_errors" => kw.ignore_errors = Some(v),
            "ignore_unreachable" => kw.ignore_unreachable = Some(v),
            "check_mode" => kw.check_mode = Some(v),
            "diff" => kw.diff = Some(v),
            "no_log" => kw.no_log = Some(v),
            "environment" => {
                self.resolve_ahead(&v);
                kw.environment.push(v);
            }
            "tags" => {
                for t in string_list(n) {
                    if !kw.tags.contains(&t) {
                        kw.tags.push(t);
                    }
                }
            }
            "delegate_to" => kw.delegate_to = Some(v),
            "run_once" => kw.run_once = Some(v),
            "any_errors_fatal" => kw.any_errors_fatal = Some(v),
            "remote_user" => kw.remote_user = Some(v),
            "delegate_facts" => kw.delegate_facts = Some(v),
            "throttle" => kw.throttle = Some(v),
            "collections" => {
                let names = string_list(n);
                if let Some(bad) = names.iter().find(|c| c.contains("{{")) {
                    return Err(PlayError::at(
                        &loc,
                        format!("collections must be names, not templates: '{bad}'"),
                    ));
                }
                kw.collections = Some(names);
            }
            "module_defaults" => {
                let maps = match v {
                    Value::Object(o) => vec![o],
                    Value::Array(a) => a
                        .into_iter()
                        .map(|x| match x {
                            Value::Object(o) => Ok(o),
                            _ => Err(PlayError::at(
                                &loc,
                                "module_defaults entries must be mappings",
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::Null => Vec::new(),
                    _ => return Err(PlayError::at(&loc, "module_defaults must be a mapping")),
                };
                for m in &maps {
                    for (k, args) in m {
                        if k.starts_with("group/") {
                            return Err(PlayError::at(
                                &loc,
                                format!(
                                    "unsupported module_defaults group '{k}' (action groups are not supported; name the modules)"
                                ),
                            ));
                        }
                        if !args.is_object() && !args.is_null() {
                            return Err(PlayError::at(
                                &loc,
                                format!("module_defaults for '{k}' must be a mapping"),
                            ));
                        }
                    }
                    self.resolve_ahead(&Value::Object(m.clone()));
                }
                kw.module_defaults.extend(maps);
            }
            "port" => kw.port = Some(v),
            "connection" => {
                if let Some(c) = v.as_str() {
                    if !c.contains("{{") && !matches!(c, "ssh" | "smart" | "local") {
                        return Err(PlayError::at(
                            &loc,
                            format!("unsupported connection '{c}' (supported: ssh, local)"),
                        ));
                    }
                }
                kw.connection = Some(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `vars:`, `tags:` and `when:` of an `import_playbook` entry, applied
    /// to every play it brought in as ansible-core's `PlaybookInclude`
    /// does: its vars over the play's, its tags added, its conditions
    /// before every task's (facts gathering's included).
    fn import_keywords(
        &mut self,
        n: &Node,
        file: &Arc<PathBuf>,
        plays: &mut [Play],
    ) -> Result<(), PlayError> {
        let mut kw = Keywords::default();
        for (key, kline, v) in as_map(n, file, "an import_playbook entry")? {
            match key.as_str() {
                "import_playbook" | "ansible.builtin.import_playbook" | "name" => {}
                "vars" | "tags" | "when" => {
                    self.keyword(&mut kw, key, v, file, *kline)?;
                }
                k => {
                    return Err(PlayError::at(
                        &loc_of(file, *kline),
                        format!("'{k}' is not a valid attribute for a PlaybookInclude"),
                    ));
                }
            }
        }
        for play in plays {
            for (k, v) in &kw.vars {
                play.kw.vars.insert(k.clone(), v.clone());
            }
            for t in &kw.tags {
                if !play.kw.tags.contains(t) {
                    play.kw.tags.push(t.clone());
                }
            }
            if !kw.when.is_empty() {
                let mut when = kw.when.clone();
                when.append(&mut play.kw.when);
                play.kw.when = when;
            }
        }
        Ok(())
    }

    fn play(&mut self, n: &Node, file: &Arc<PathBuf>) -> Result<Play, PlayError> {
        let m = as_map(n, file, "a play")?;
        let mut play = Play {
            name: String::new(),
            hosts: String::new(),
            gather_facts: None,
            kw: Keywords::default(),
            vars_files: Vec::new(),
            serial: Vec::new(),
            strategy: Strategy::Linear,
            max_fail_percentage: None,
            order: "inventory".into(),
            sections: Vec::new(),
            handlers: Vec::new(),
            base: self.play_base.clone(),
            loc: loc_of(file, n.line),
            gather_args: Map::new(),
        };
        let mut hosts_seen = false;
        let (mut pre, mut roles, mut tasks, mut post, mut handlers) =
            (None, None, None, None, None);
        for (key, kline, v) in m {
            let loc = loc_of(file, *kline);
            if self.keyword(&mut play.kw, key, v, file, *kline)? {
                if key == "delegate_to" || key == "when" || key == "run_once" {
                    return Err(PlayError::at(
                        &loc,
                        format!("'{key}' is not a valid play keyword"),
                    ));
                }
                continue;
            }
            match key.as_str() {
                "name" => play.name = v.as_str().unwrap_or_default(),
                "hosts" => {
                    hosts_seen = true;
                    play.hosts = match v.to_json() {
                        Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other
                            .as_str()
                            .map_or_else(|| other.to_string(), str::to_owned),
                    };
                }
                "gather_facts" => play.gather_facts = Some(bool_of(v, file, key)?),
                "vars_files" => {
                    let vf = match v.to_json() {
                        Value::Array(a) => a,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    for f in vf {
                        self.resolve_ahead(&f);
                        play.vars_files.push((f, loc.clone()));
                    }
                }
                "serial" => {
                    play.serial = match v.to_json() {
                        Value::Array(a) => a,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    }
                }
                "strategy" => {
                    play.strategy = match v.as_str().as_deref() {
                        Some("linear") | Some("mitogen_linear") => Strategy::Linear,
                        Some("free") | Some("mitogen_free") => Strategy::Free,
                        other => {
                            return Err(PlayError::at(
                                &loc,
                                format!(
                                    "unsupported strategy {:?} (supported: linear, free)",
                                    other.unwrap_or_default()
                                ),
                            ));
                        }
                    }
                }
                "max_fail_percentage" => {
                    play.max_fail_percentage = match v.to_json() {
                        Value::Number(x) => x.as_f64(),
                        Value::String(s) => s.trim_end_matches('%').parse().ok(),
                        _ => None,
                    };
                    if play.max_fail_percentage.is_none() {
                        return Err(PlayError::at(&loc, "max_fail_percentage must be a number"));
                    }
                }
                "pre_tasks" => pre = Some(v),
                "roles" => roles = Some(v),
                "tasks" => tasks = Some(v),
                "post_tasks" => post = Some(v),
                "handlers" => handlers = Some(v),
                "order" => {
                    let o = v.as_str().unwrap_or_default();
                    if !matches!(
                        o.as_str(),
                        "inventory" | "reverse_inventory" | "sorted" | "reverse_sorted" | "shuffle"
                    ) {
                        return Err(PlayError::at(
                            &loc,
                            format!(
                                "'{o}' is not a valid host order (inventory, reverse_inventory, sorted, reverse_sorted, shuffle)"
                            ),
                        ));
                    }
                    play.order = o.to_string();
                }
                "fact_path" | "gather_subset" | "gather_timeout" => {
                    self.resolve_ahead(&v.to_json());
                    play.gather_args.insert(key.clone(), v.to_json());
                }
                "force_handlers" => {
                    return Err(PlayError::at(
                        &loc,
                        format!("unsupported play keyword '{key}'"),
                    ));
                }
                k if UNSUPPORTED_KEYWORDS.contains(&k) => {
                    return Err(PlayError::at(
                        &loc,
                        format!("unsupported play keyword '{k}'"),
                    ));
                }
                k => return Err(PlayError::at(&loc, format!("unknown play keyword '{k}'"))),
            }
        }
        if !hosts_seen {
            return Err(PlayError::at(&play.loc, "a play needs 'hosts'"));
        }
        if play.name.is_empty() {
            play.name = play.hosts.clone();
        }
        // Play keywords reach every task; play vars are their own layer.
        let mut kw = play.kw.clone();
        kw.vars.clear();
        let base = self.play_base.clone();
        let mut hs = Vec::new();
        if let Some(p) = pre {
            play.sections
                .push(self.items(p, file, &kw, None, &base, &mut hs)?);
        }
        let mut role_items = Vec::new();
        if let Some(r) = roles {
            let Y::Seq(list) = &r.y else {
                return Err(PlayError::at(
                    &loc_of(file, r.line),
                    "'roles' must be a list",
                ));
            };
            let mut seen = Vec::new();
            for entry in list {
                role_items.extend(self.role_entry(entry, file, &kw, &mut hs, &mut seen)?);
            }
        }
        play.sections.push(role_items);
        if let Some(t) = tasks {
            play.sections
                .push(self.items(t, file, &kw, None, &base, &mut hs)?);
        }
        if let Some(p) = post {
            play.sections
                .push(self.items(p, file, &kw, None, &base, &mut hs)?);
        }
        if let Some(h) = handlers {
            let mut own = Vec::new();
            let items = self.items(h, file, &kw, None, &base, &mut own)?;
            flatten_handlers(items, &mut play.handlers);
        }
        play.handlers.extend(hs);
        Ok(play)
    }

    /// A `roles:` entry: a name or a mapping with `role:`/`name:` and params.
    fn role_entry(
        &mut self,
        entry: &Node,
        file: &Arc<PathBuf>,
        kw: &Keywords,
        handlers: &mut Vec<TaskDef>,
        seen: &mut Vec<PathBuf>,
    ) -> Result<Vec<Item>, PlayError> {
        let loc = loc_of(file, entry.line);
        let (name, params, rkw) = match &entry.y {
            Y::Scalar(Value::String(s)) => (s.clone(), Map::new(), Keywords::default()),
            Y::Map(m) => {
                let mut name = None;
                let mut params = Map::new();
                let mut rkw = Keywords::default();
                for (k, kl, v) in m {
                    if k == "role" || k == "name" {
                        name = v.as_str();
                    } else if !self.keyword(&mut rkw, k, v, file, *kl)? {
                        params.insert(k.clone(), v.to_json());
                    }
                }
                let Some(name) = name else {
                    return Err(PlayError::at(&loc, "a role entry needs 'role:'"));
                };
                (name, params, rkw)
            }
            _ => {
                return Err(PlayError::at(
                    &loc,
                    "a role entry must be a name or a mapping",
                ));
            }
        };
        let kw = kw.inherit(&rkw);
        self.load_role(&name, params, &kw, &loc, handlers, seen, "main")
    }

    /// A role in a collection, as ansible-core's `_get_collection_role_path`
    /// finds it: `ns.coll.role` in that collection, a short name in each
    /// collection of the `collections:` list (`ansible.builtin` and
    /// `ansible.legacy` mean the role paths). The role's dir and FQCN.
    fn find_collection_role(
        &self,
        name: &str,
        collections: &[String],
    ) -> Option<(PathBuf, String)> {
        let in_collection = |coll: &str, role: &str| {
            let (ns, c) = coll.split_once('.')?;
            self.opts.collections_paths.iter().find_map(|p| {
                let d = p
                    .join("ansible_collections")
                    .join(ns)
                    .join(c)
                    .join("roles")
                    .join(role);
                d.is_dir().then(|| (d, format!("{coll}.{role}")))
            })
        };
        match name.rsplit_once('.') {
            Some((coll, role)) if coll.contains('.') => in_collection(coll, role),
            Some(_) => None,
            None => collections
                .iter()
                .filter(|c| !matches!(c.as_str(), "ansible.builtin" | "ansible.legacy"))
                .find_map(|c| in_collection(c, name)),
        }
    }

    fn find_role(&self, name: &str, from: &Path) -> Option<PathBuf> {
        let mut cands = vec![
            self.play_base.join("roles").join(name),
            from.join("roles").join(name),
            from.join(name),
        ];
        cands.extend(self.opts.roles_path.iter().map(|p| p.join(name)));
        cands.push(self.play_base.join(name));
        cands.into_iter().find(|p| p.is_dir())
    }

    #[allow(clippy::too_many_arguments)]
    fn load_role(
        &mut self,
        name: &str,
        params: Map<String, Value>,
        kw: &Keywords,
        loc: &Loc,
        handlers: &mut Vec<TaskDef>,
        seen: &mut Vec<PathBuf>,
        tasks_from: &str,
    ) -> Result<Vec<Item>, PlayError> {
        let including = self.including.take();
        if self.depth > 32 {
            return Err(PlayError::at(
                loc,
                format!("role '{name}': dependencies nest too deep (a cycle?)"),
            ));
        }
        // A collection's role first (by FQCN, or through `collections:`),
        // then the role paths.
        let collections = kw.collections.clone().unwrap_or_default();
        let (dir, name, collection) = match self.find_collection_role(name, &collections) {
            Some((d, fq)) => {
                let coll = fq.rsplit_once('.').map(|(c, _)| c.to_owned());
                (d, fq, coll)
            }
            None => match self.find_role(name, &self.play_base.clone()) {
                Some(d) => (d, name.to_owned(), None),
                None => {
                    return Err(PlayError::at(
                        loc,
                        format!(
                            "the role '{name}' was not found in {}/roles, the roles path, {}or {}",
                            self.play_base.display(),
                            if collections.is_empty() && !name.contains('.') {
                                String::new()
                            } else {
                                "the collections, ".to_owned()
                            },
                            self.play_base.display()
                        ),
                    ));
                }
            },
        };
        let name = name.as_str();
        // A collection's role looks its short module names up in its own
        // collection first (ansible-core puts it at the head of the role's
        // collection list).
        let coll_kw;
        let kw = match &collection {
            Some(c) => {
                let mut k = kw.clone();
                let mut list = vec![c.clone()];
                list.extend(collections.iter().filter(|x| *x != c).cloned());
                k.collections = Some(list);
                coll_kw = k;
                &coll_kw
            }
            None => kw,
        };
        let mut out = Vec::new();
        // meta/main.yml dependencies first.
        let meta = ["meta/main.yml", "meta/main.yaml"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file());
        let mut allow_dup = false;
        if let Some(mp) = meta {
            let text = read_text(&mp)?;
            let doc = yaml::parse_one(&text, &mp)?;
            let mfile = Arc::new(mp);
            if let Some(a) = doc.get("allow_duplicates") {
                allow_dup = bool_of(a, &mfile, "allow_duplicates")?;
            }
            if let Some(deps) = doc.get("dependencies") {
                if let Y::Seq(list) = &deps.y {
                    self.depth += 1;
                    for d in list {
                        let r = self.role_entry(d, &mfile, kw, handlers, seen);
                        self.depth -= 1;
                        out.extend(r?);
                        self.depth += 1;
                    }
                    self.depth -= 1;
                }
            }
        }
        let key = dir.join(format!("@{tasks_from}{}", Value::Object(params.clone())));
        if including.is_none() && !allow_dup && seen.contains(&key) {
            return Ok(out);
        }
        let role_key = format!(
            "{}{}",
            key.display(),
            if including.is_some() { "@include" } else { "" }
        );
        seen.push(key);
        let read_main = |sub: &str| -> Result<Map<String, Value>, PlayError> {
            match ["main.yml", "main.yaml", "main"]
                .iter()
                .map(|f| dir.join(sub).join(f))
                .find(|p| p.is_file())
            {
                Some(p) => read_vars_file(&p),
                None => Ok(Map::new()),
            }
        };
        let defaults = read_main("defaults")?;
        let mut vars = read_main("vars")?;
        vars.extend(params);
        // ansible-core adds a role's plugin dirs when it loads the role.
        if let Some(h) = self.templar.plugins() {
            h.add_plugin_dir(&dir);
        }
        if let Some(m) = &self.opts.modules {
            let lib = dir.join("library");
            if lib.is_dir() {
                m.add_library_dir(lib);
            }
        }
        let role = Arc::new(Role {
            name: name.to_owned(),
            collection,
            path: dir.clone(),
            defaults: Arc::new(defaults),
            vars: Arc::new(vars),
            key: role_key,
            allow_duplicates: including.unwrap_or(allow_dup),
        });
        let tasks_dir = dir.join("tasks");
        if let Some(tf) = task_file(&tasks_dir, tasks_from) {
            let items = self.task_file(&tf, kw, Some(role.clone()), handlers)?;
            out.extend(items);
            out.push(Item::Task(Box::new(role.complete_marker(kw, loc))));
        } else if tasks_from != "main" {
            return Err(PlayError::at(
                loc,
                format!("role '{name}' has no tasks/{tasks_from}.yml"),
            ));
        }
        if let Some(hf) = task_file(&dir.join("handlers"), "main") {
            let mut nested = Vec::new();
            let items = self.task_file(&hf, &Keywords::default(), Some(role), &mut nested)?;
            flatten_handlers(items, handlers);
        }
        Ok(out)
    }

    fn task_file(
        &mut self,
        path: &Path,
        kw: &Keywords,
        role: Option<Arc<Role>>,
        handlers: &mut Vec<TaskDef>,
    ) -> Result<Vec<Item>, PlayError> {
        let text = read_text(path)?;
        let doc = yaml::parse_one(&text, path)?;
        if matches!(doc.y, Y::Scalar(Value::Null)) {
            return Ok(Vec::new());
        }
        let file = Arc::new(path.to_owned());
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        self.items(&doc, &file, kw, role, &base, handlers)
    }

    fn items(
        &mut self,
        n: &Node,
        file: &Arc<PathBuf>,
        kw: &Keywords,
        role: Option<Arc<Role>>,
        base: &Path,
        handlers: &mut Vec<TaskDef>,
    ) -> Result<Vec<Item>, PlayError> {
        let list: &[Node] = match &n.y {
            Y::Seq(s) => s,
            Y::Scalar(Value::Null) => &[],
            _ => {
                return Err(PlayError::at(
                    &loc_of(file, n.line),
                    "a task list must be a YAML list",
                ));
            }
        };
        let mut out = Vec::new();
        for t in list {
            out.extend(self.item(t, file, kw, role.clone(), base, handlers)?);
        }
        Ok(out)
    }

    fn item(
        &mut self,
        n: &Node,
        file: &Arc<PathBuf>,
        outer: &Keywords,
        role: Option<Arc<Role>>,
        base: &Path,
        handlers: &mut Vec<TaskDef>,
    ) -> Result<Vec<Item>, PlayError> {
        let m = as_map(n, file, "a task")?;
        let loc = loc_at(file, n);
        let mut kw = Keywords::default();
        let is_block = m
            .iter()
            .any(|(k, _, _)| BLOCK_KEYWORDS.contains(&k.as_str()));
        let mut t = TaskDef::new(
            "",
            Value::Object(Map::new()),
            Keywords::default(),
            role.clone(),
            base.to_owned(),
            loc.clone(),
        );
        let mut action: Option<(String, Node, usize)> = None;
        let mut extra_args: Option<Value> = None;
        let mut block_parts: [Option<&Node>; 3] = [None, None, None];
        for (key, kline, v) in m {
            let kloc = loc_of(file, *kline);
            if self.keyword(&mut kw, key, v, file, *kline)? {
                continue;
            }
            match key.as_str() {
                "name" => t.name = v.as_str(),
                "block" => block_parts[0] = Some(v),
                "rescue" => block_parts[1] = Some(v),
                "always" => block_parts[2] = Some(v),
                _ if is_block => {
                    return Err(PlayError::at(
                        &kloc,
                        format!("'{key}' is not a valid keyword for a block"),
                    ));
                }
                "register" => t.register = v.as_str(),
                "loop" => {
                    self.resolve_ahead(&v.to_json());
                    t.loop_ = Some((v.to_json(), "loop".into()));
                }
                k if k.starts_with("with_") => {
                    let name = &k["with_".len()..];
                    if !super::lookup::served(name, &self.templar) {
                        return Err(PlayError::at(
                            &kloc,
                            format!(
                                "unsupported loop '{k}' (supported: loop, with_{})",
                                super::lookup::LOOKUPS.join(", with_")
                            ),
                        ));
                    }
                    self.resolve_ahead(&v.to_json());
                    t.loop_ = Some((v.to_json(), k.to_owned()));
                }
                "loop_control" => match v.to_json() {
                    Value::Object(o) => {
                        for k in o.keys() {
                            if !matches!(
                                k.as_str(),
                                "loop_var"
                                    | "label"
                                    | "index_var"
                                    | "pause"
                                    | "extended"
                                    | "extended_allitems"
                            ) {
                                return Err(PlayError::at(
                                    &kloc,
                                    format!("unsupported loop_control option '{k}'"),
                                ));
                            }
                        }
                        t.loop_control = o;
                    }
                    _ => return Err(PlayError::at(&kloc, "'loop_control' must be a mapping")),
                },
                "until" => {
                    self.resolve_ahead_cond(&v.to_json());
                    t.until = Some(v.to_json());
                }
                "retries" => t.retries = Some(v.to_json()),
                "delay" => t.delay = Some(v.to_json()),
                "async" => t.async_ = Some(v.to_json()),
                "poll" => t.poll = Some(v.to_json()),
                "timeout" => t.timeout = Some(v.to_json()),
                "changed_when" => {
                    self.resolve_ahead_cond(&v.to_json());
                    t.changed_when = Some(v.to_json());
                }
                "failed_when" => {
                    self.resolve_ahead_cond(&v.to_json());
                    t.failed_when = Some(v.to_json());
                }
                "notify" => t.notify = string_list(v),
                "listen" => t.listen = string_list(v),
                "args" => {
                    let a = v.to_json();
                    self.resolve_ahead(&a);
                    match a {
                        Value::String(s) if all_template(&s) => t.arg_templates.push(s),
                        Value::Object(_) | Value::Null => extra_args = Some(a),
                        _ => {
                            return Err(PlayError::at(
                                &kloc,
                                "The value of the task `args` keyword is invalid.",
                            ));
                        }
                    }
                }
                "action" | "local_action" => {
                    let Some(s) = v.as_str() else {
                        // `action: {module: x, args...}`
                        if let Value::Object(mut o) = v.to_json() {
                            if let Some(Value::String(mname)) = o.shift_remove("module") {
                                self.resolve_ahead(&Value::Object(o.clone()));
                                t.action = mname;
                                t.args = Value::Object(o);
                                if key == "local_action" {
                                    kw.delegate_to = Some("localhost".into());
                                }
                                continue;
                            }
                        }
                        return Err(PlayError::at(&kloc, format!("'{key}' needs 'module args'")));
                    };
                    let (mname, rest) = s
                        .trim()
                        .split_once(char::is_whitespace)
                        .unwrap_or_else(|| (s.trim(), ""));
                    if key == "local_action" {
                        kw.delegate_to = Some("localhost".into());
                    }
                    action = Some((
                        mname.to_owned(),
                        Node {
                            y: Y::Scalar(Value::String(rest.trim().to_owned())),
                            line: v.line,
                            col: v.col,
                        },
                        *kline,
                    ));
                }
                k if UNSUPPORTED_KEYWORDS.contains(&k) => {
                    return Err(PlayError::at(
                        &kloc,
                        format!("unsupported task keyword '{k}'"),
                    ));
                }
                k if k.starts_with("ansible.") || !TASK_KEYWORDS.contains(&k) => {
                    if let Some((prev, _, _)) = &action {
                        return Err(PlayError::at(
                            &kloc,
                            format!("conflicting action statements: {prev}, {k}"),
                        ));
                    }
                    action = Some((k.to_owned(), v.clone(), *kline));
                }
                k => return Err(PlayError::at(&kloc, format!("'{k}' is not valid here"))),
            }
        }
        let kw_all = outer.inherit(&kw);
        if is_block {
            let mut parts: Vec<Vec<Item>> = Vec::new();
            for p in block_parts {
                parts.push(match p {
                    Some(n) => self.items(n, file, &kw_all, role.clone(), base, handlers)?,
                    None => Vec::new(),
                });
            }
            let always = parts.pop().unwrap_or_default();
            let rescue = parts.pop().unwrap_or_default();
            let block = parts.pop().unwrap_or_default();
            return Ok(vec![Item::Block(Box::new(BlockDef {
                block,
                rescue,
                always,
                name: t.name,
                loc,
            }))]);
        }
        t.kw = kw_all;
        if let Some((mname, argnode, aline)) = action {
            let aloc = loc_of(file, aline);
            t.action = mname;
            let raw = argnode.to_json();
            t.args = match (&raw, short(&t.action)) {
                // `raw` too: ansible-core's FREEFORM_ACTIONS take
                // `executable=` (and the other free-form keys) out of it.
                (Value::String(s), a) if FREE_FORM.contains(&a) => {
                    Value::Object(parse_kv(s, true).map_err(|e| PlayError::at(&aloc, e))?)
                }
                (
                    Value::String(s),
                    "include_tasks" | "import_tasks" | "include_vars" | "include" | "meta"
                    | "include_role" | "import_role",
                ) if !s.contains('=') || short(&t.action) == "meta" => {
                    let mut o = Map::new();
                    o.insert("_raw_params".into(), raw.clone());
                    Value::Object(o)
                }
                (Value::String(s), a) => {
                    let err = |e: String| PlayError::at(&aloc, format!("{}: {e}", t.action));
                    let (mut kv, raw) = parse_kv_raw(s).map_err(err)?;
                    match raw {
                        // Words that are one template, for an action that
                        // takes no words: a mapping at run time.
                        Some(r) if all_template(&r) && !takes_raw_params(a) => {
                            t.arg_templates.push(r);
                        }
                        // Other words: the task fails when it runs, as in
                        // ansible-core (an action that takes raw params
                        // says what it makes of them).
                        Some(r) => {
                            kv.insert("_raw_params".into(), Value::String(r));
                        }
                        None => {}
                    }
                    Value::Object(kv)
                }
                (Value::Null, _) => Value::Object(Map::new()),
                (Value::Object(_), _) => raw.clone(),
                (other, _) => {
                    return Err(PlayError::at(
                        &aloc,
                        format!(
                            "{}: arguments must be a mapping or a k=v string, got {other}",
                            t.action
                        ),
                    ));
                }
            };
            if let Some(Value::Object(extra)) = extra_args {
                if let Value::Object(o) = &mut t.args {
                    for (k, v) in extra {
                        o.entry(k).or_insert(v);
                    }
                }
            }
            self.resolve_ahead(&t.args);
        } else if t.action.is_empty() {
            return Err(PlayError::at(&loc, "no module/action detected in task"));
        }
        if let Some(n) = &t.name {
            self.resolve_ahead(&Value::String(n.clone()));
        }
        if let Some(r) = &t.register {
            if !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || r.is_empty() {
                return Err(PlayError::at(
                    &loc,
                    format!("invalid variable name in 'register': {r:?}"),
                ));
            }
        }
        self.static_action(t, handlers)
    }

    /// An `action_plugins/` dir next to the playbook or in the task's role
    /// overrides the action of that name (`debug` too): that Python code
    /// cannot run here, so the task is refused, never run without it.
    /// Returns why.
    fn local_action_plugin(&self, t: &TaskDef) -> Option<String> {
        if t.action.contains('.') && !t.action.starts_with("ansible.legacy.") {
            return None;
        }
        let short = t.short_action();
        let dirs = [
            Some(self.play_base.clone()),
            t.role.as_ref().map(|r| r.path.clone()),
        ];
        dirs.into_iter()
            .flatten()
            .map(|d| d.join("action_plugins").join(format!("{short}.py")))
            .find(|p| p.is_file())
            .map(|p| {
            format!(
                "unsupported action '{}': its Python action plugin {} cannot run under mitogen-play yet",
                t.action,
                p.display()
            )
        })
    }

    /// A task whose action mitogen-play cannot run (`why`) is refused
    /// before anything runs, unless a condition may skip it (an
    /// OS-specific branch): then it stays, and fails if it is reached,
    /// never running its module without its action.
    fn refuse(&self, mut t: TaskDef, why: String) -> Result<Vec<Item>, PlayError> {
        if t.kw.when.is_empty() {
            return Err(PlayError::at(
                &t.loc,
                format!("{why}; refused before anything runs rather than run without it"),
            ));
        }
        t.unsupported = Some(why);
        Ok(vec![Item::Task(Box::new(t))])
    }

    /// Expands static actions (`import_tasks`, `import_role`) and checks
    /// the others exist.
    fn static_action(
        &mut self,
        mut t: TaskDef,
        handlers: &mut Vec<TaskDef>,
    ) -> Result<Vec<Item>, PlayError> {
        let a = t.short_action().to_owned();
        if !matches!(
            a.as_str(),
            "import_tasks" | "import_role" | "include_role" | "include_tasks" | "meta" | "include"
        ) {
            if let Some(why) = self.local_action_plugin(&t) {
                return self.refuse(t, why);
            }
        }
        match a.as_str() {
            "import_tasks" => {
                let f = raw_param(&t.args).or_else(|| {
                    t.args
                        .get("file")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let Some(f) = f else {
                    return Err(PlayError::at(&t.loc, "import_tasks needs a file"));
                };
                // A template in the name, with what is known as the
                // playbook is read: the role's and play's variables,
                // role_path, playbook_dir (not facts or registered ones).
                let f = if f.contains("{{") {
                    let mut vars = crate::template::Vars::new();
                    if let Some(r) = &t.role {
                        vars.push(r.defaults.clone());
                        vars.push(r.vars.clone());
                        vars.push_one("role_path", absolute(&r.path).display().to_string().into());
                        vars.push_one("role_name", r.short_name().into());
                    }
                    vars.push(Arc::new(t.kw.vars.clone()));
                    vars.push_one(
                        "playbook_dir",
                        absolute(&self.play_base).display().to_string().into(),
                    );
                    self.templar.string(&f, &vars).map_err(|e| {
                        PlayError::at(
                            &t.loc,
                            format!("import_tasks: the file name {f:?} cannot be templated as the playbook is read ({e}); use include_tasks"),
                        )
                    })?
                } else {
                    f
                };
                let path = resolve_task_file(&t, &f);
                if !path.is_file() {
                    return Err(PlayError::at(
                        &t.loc,
                        format!("import_tasks: file not found: {}", path.display()),
                    ));
                }
                let mut kw = t.kw.clone();
                kw.vars.extend(Map::new());
                self.depth += 1;
                let r = self.task_file(&path, &kw, t.role.clone(), handlers);
                self.depth -= 1;
                r
            }
            "import_role" => {
                let Some(name) = t.args.get("name").and_then(Value::as_str) else {
                    return Err(PlayError::at(&t.loc, "import_role needs 'name'"));
                };
                let from = t
                    .args
                    .get("tasks_from")
                    .and_then(Value::as_str)
                    .unwrap_or("main")
                    .to_owned();
                let name = name.to_owned();
                let mut seen = Vec::new();
                // ansible-core loads an imported role as a new role
                // (`from_include`): never the same as one that ran.
                self.including = Some(true);
                self.depth += 1;
                let r =
                    self.load_role(&name, Map::new(), &t.kw, &t.loc, handlers, &mut seen, &from);
                self.depth -= 1;
                r
            }
            "include_role" => {
                // Loaded here too (static view), run when reached.
                let Some(name) = t.args.get("name").and_then(Value::as_str) else {
                    return Err(PlayError::at(&t.loc, "include_role needs 'name'"));
                };
                if name.contains("{{") {
                    return Err(PlayError::at(
                        &t.loc,
                        "include_role with a templated name is not supported",
                    ));
                }
                let from = t
                    .args
                    .get("tasks_from")
                    .and_then(Value::as_str)
                    .unwrap_or("main")
                    .to_owned();
                let name = name.to_owned();
                let mut seen = Vec::new();
                let mut tkw = t.kw.clone();
                // The include's conditions apply once, at the include.
                tkw.when.clear();
                self.including = Some(
                    t.args
                        .get("allow_duplicates")
                        .is_none_or(crate::executor::bool_val),
                );
                self.depth += 1;
                let items =
                    self.load_role(&name, Map::new(), &tkw, &t.loc, handlers, &mut seen, &from);
                self.depth -= 1;
                let items = items?;
                let mut t = t;
                t.included = Some(Arc::new(items));
                Ok(vec![Item::Task(Box::new(t))])
            }
            "meta" | "include_tasks" | "gather_facts" | "setup" | "ping" => {
                if a == "meta" {
                    let m = raw_param(&t.args).unwrap_or_default();
                    if !matches!(
                        m.as_str(),
                        "flush_handlers"
                            | "noop"
                            | "end_play"
                            | "end_host"
                            | "clear_host_errors"
                            | "refresh_inventory"
                    ) {
                        return Err(PlayError::at(
                            &t.loc,
                            format!("unsupported meta action '{m}'"),
                        ));
                    }
                }
                if a == "include_tasks"
                    && raw_param(&t.args).is_none()
                    && t.args.get("file").is_none()
                {
                    return Err(PlayError::at(&t.loc, "include_tasks needs a file"));
                }
                Ok(vec![Item::Task(Box::new(t))])
            }
            "include" => Err(PlayError::at(
                &t.loc,
                "'include' was removed from ansible-core: use include_tasks or import_tasks",
            )),
            // What the executor runs itself (its one table says which).
            a if crate::executor::is_controller_action(a) => Ok(vec![Item::Task(Box::new(t))]),
            "pause" | "wait_for_connection" | "set_stats" | "validate_argument_spec" | "reboot" => {
                let why = format!("unsupported action '{}'", t.action);
                self.refuse(t, why)
            }
            _ => {
                if let Some(modules) = &self.opts.modules {
                    // A short name: the play's collections first, then
                    // ansible.legacy (ansible-core's search order).
                    if !t.action.contains('.') {
                        let found = t.kw.collections.iter().flatten().find_map(|c| {
                            if c == "ansible.builtin" || c == "ansible.legacy" {
                                return None;
                            }
                            let fq = format!("{c}.{}", t.action);
                            (!matches!(check_module(modules, &fq), Err(Refusal::NotFound(_))))
                                .then_some(fq)
                        });
                        if let Some(fq) = found {
                            t.action = fq;
                        }
                    }
                    match check_module(modules, &t.action) {
                        Ok(()) => {}
                        Err(Refusal::NotFound(e)) => {
                            return Err(PlayError::at(
                                &t.loc,
                                format!("couldn't resolve module/action '{}': {e}", t.action),
                            ));
                        }
                        Err(Refusal::Unsupported(why)) => {
                            let why = format!("unsupported action '{}': {why}", t.action);
                            return self.refuse(t, why);
                        }
                    }
                }
                Ok(vec![Item::Task(Box::new(t))])
            }
        }
    }
}

fn flatten_handlers(items: Vec<Item>, out: &mut Vec<TaskDef>) {
    for i in items {
        match i {
            Item::Task(t) => out.push(*t),
            Item::Block(b) => {
                flatten_handlers(b.block, out);
                flatten_handlers(b.rescue, out);
                flatten_handlers(b.always, out);
            }
        }
    }
}

/// `_raw_params` of free-form args.
pub fn raw_param(args: &Value) -> Option<String> {
    args.get("_raw_params")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn task_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [
        format!("{name}.yml"),
        format!("{name}.yaml"),
        name.to_owned(),
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
}

/// A task file named by a task: relative to the role's `tasks/`, then to
/// the including file's directory.
pub fn resolve_task_file(t: &TaskDef, f: &str) -> PathBuf {
    let p = Path::new(f);
    if p.is_absolute() {
        return p.to_owned();
    }
    if let Some(r) = &t.role {
        let c = r.path.join("tasks").join(f);
        if c.is_file() {
            return c;
        }
    }
    t.base.join(f)
}

/// Parses a task file at run time (`include_tasks`).
///
/// # Errors
/// As [`load_playbook`].
pub fn load_task_file(
    path: &Path,
    kw: &Keywords,
    role: Option<Arc<Role>>,
    opts: &ParseOptions,
    play_base: &Path,
) -> Result<(Vec<Item>, Vec<TaskDef>), PlayError> {
    let mut p = Parser {
        opts,
        templar: Templar::with_plugins(opts.plugins.clone()),
        play_base: play_base.to_owned(),
        depth: 0,
        including: None,
    };
    let mut handlers = Vec::new();
    let items = p.task_file(path, kw, role, &mut handlers)?;
    Ok((items, handlers))
}
