//! How plays run: [`Options`] (the command line's and ansible.cfg's
//! settings), and the host order and `serial:` batches they give.

use crate::playbook::TaskDef;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Default `forks`: hosts worked on at once. Ansible's is 5 because each
/// fork is a Python process; here a fork is a thread blocked on a reply
/// from the host's agent, so the controller's cost per fork is a stack
/// and a few fds, and the limit is what the targets and the network take.
pub const DEFAULT_FORKS: usize = 100;

/// Become contexts kept per host (least recently used beyond that closed).
pub const DEFAULT_BECOME_LIMIT: usize = 8;

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
    /// `[privilege_escalation]` defaults (`-b`, `--become-user`,
    /// `--become-method`).
    pub become_: Become,
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
    /// How many `-v` were given: `debug` tasks with a higher `verbosity`
    /// are skipped.
    pub verbosity: u8,
    /// The inventory sources given (`ansible_inventory_sources`).
    pub inventory_sources: Vec<String>,
    /// The config file read, if any (`ansible_config_file`).
    pub config_file: Option<PathBuf>,
}

/// Become defaults: whether, to whom, how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Become {
    /// `become` (`-b`).
    pub enabled: bool,
    /// `become_user` (default `root`).
    pub user: String,
    /// `become_method` (default `sudo`; `sudo`, `su` and `doas` run).
    pub method: String,
}

impl Default for Become {
    fn default() -> Self {
        Self {
            enabled: false,
            user: "root".into(),
            method: "sudo".into(),
        }
    }
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
        let glob = crate::lookup::fnmatch_regex(pat);
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
            become_: Become::default(),
            pipelining: false,
            ssh_args: Vec::new(),
            gather_explicit: false,
            become_limit: DEFAULT_BECOME_LIMIT,
            connection: "ssh".into(),
            connection_password: None,
            become_password: None,
            start_at_task: None,
            verbosity: 0,
            inventory_sources: Vec::new(),
            config_file: None,
        }
    }
}

/// `order: shuffle`: a fresh order each run.
pub(super) fn shuffle(v: &mut [String]) {
    fastrand::shuffle(v);
}

/// `serial:` batches.
pub(super) fn batches(hosts: &[String], serial: &[Value]) -> Vec<Vec<String>> {
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
