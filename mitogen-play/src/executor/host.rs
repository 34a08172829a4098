//! What the executor keeps per host ([`HostState`]) and how a host is
//! reached: its base connection (local or ssh, one per [`Login`]) and the
//! become context on top of it, as the host's variables, the task's
//! keywords and the options say.

use super::{Executor, bool_val};
use crate::events::Stats;
use crate::playbook::TaskDef;
use crate::template::Vars;
use mitogen_ansible::{Connection, Target};
use mitogen_core::{Context, Local};
use mitogen_ssh::{Doas, HostKeyChecking, Ssh, Su, Sudo};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How a host is logged in to: its connection's identity (a host's base
/// connections are kept by it: a task with another `remote_user` gets its
/// own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Login {
    connection: String,
    user: Option<String>,
    port: Option<String>,
    /// `ansible_host` (the inventory name if unset).
    addr: String,
}

/// An ssh destination as ssh's `%C` tells them apart: one ControlMaster
/// each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SshDest {
    user: Option<String>,
    addr: String,
    port: Option<String>,
}

/// Why a task's context could not be had.
pub(super) enum TargetError {
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
    pub(super) name: String,
    /// `--start-at-task` not reached yet in this play.
    pub(super) seeking_start: AtomicBool,
    /// The host's connections, by how they are made.
    pub(super) base: Mutex<HashMap<Login, Result<Context, String>>>,
    pub(super) connecting: Mutex<()>,
    /// Facts, by the names modules returned them under (`ansible_hostname`,
    /// `getent_passwd`).
    pub(crate) facts: Mutex<Map<String, Value>>,
    /// set_fact, register: results, never templated again.
    pub(crate) registered: Mutex<Map<String, Value>>,
    /// include_vars: what vars files say (templated when read), below
    /// `registered` (ansible-core's precedence).
    pub(crate) included: Mutex<Map<String, Value>>,
    pub(super) failed: AtomicBool,
    pub(super) unreachable: AtomicBool,
    pub(super) ended: AtomicBool,
    pub(super) stats: Mutex<Stats>,
    pub(super) notified: Mutex<Vec<String>>,
    /// The loop variables of the `include_tasks`/`include_role` items
    /// being run on this host, innermost last (task-level variables of
    /// the included tasks, as ansible-core's `IncludedFile._vars`).
    pub(super) include_vars: Mutex<Vec<Arc<Map<String, Value>>>>,
    /// The last task that failed here and its result: `rescue:` sees them
    /// as `ansible_failed_task` and `ansible_failed_result`.
    pub(super) last_failure: Mutex<Option<(Value, Value)>>,
    /// Roles ([`Role::key`](crate::playbook::Role::key)) a task of which
    /// ran here, and those that then completed (`role_complete`): a role
    /// without `allow_duplicates` does not run again on this host.
    pub(super) roles_ran: Mutex<HashSet<String>>,
    pub(super) roles_done: Mutex<HashSet<String>>,
}

pub(super) fn vars_interpreters(vars: &Vars) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in ["perl", "ruby", "bash", "sh", "node"] {
        if let Some(Value::String(p)) = vars.get(&format!("ansible_{name}_interpreter")) {
            out.push((name.to_owned(), p.clone()));
        }
    }
    out
}

impl Executor {
    pub(super) fn var_str(vars: &Vars, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| vars.get(k)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    }

    /// The context for `h` with this task's become, connecting on first use.
    /// `h` is the host the task runs on (a delegate's too); results and
    /// messages name `inventory_name`, the host the task is for.
    pub(super) fn target(
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
        let addr = get(&["ansible_host", "ansible_ssh_host"]).unwrap_or_else(|| h.name.clone());
        let how = Login {
            user: get(&["ansible_user", "ansible_ssh_user"])
                .or_else(|| keyword(&t.kw.remote_user))
                .or_else(|| self.opts.remote_user.clone()),
            port: get(&["ansible_port", "ansible_ssh_port"]).or_else(|| keyword(&t.kw.port)),
            connection: conn.clone(),
            addr: addr.clone(),
        };
        let base = self.base_context(h, &how, &get)?;
        let become_on = Self::var_str(vars, &["ansible_become"])
            .map(|s| bool_val(&Value::String(s)))
            .or_else(|| self.kw_bool(&t.kw.become_, vars))
            .unwrap_or(self.opts.become_.enabled);
        let login_user = how.user.or_else(|| Some(mitogen_core::layer::user_name()));
        let ctx = if become_on {
            let user = get(&["ansible_become_user"])
                .or_else(|| {
                    t.kw.become_user
                        .as_ref()
                        .and_then(|v| self.templar.value(v, vars).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| self.opts.become_.user.clone());
            let method = get(&["ansible_become_method"])
                .or_else(|| {
                    t.kw.become_method
                        .as_ref()
                        .and_then(|v| self.templar.value(v, vars).ok())
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| self.opts.become_.method.clone());
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

    pub(super) fn base_context(
        &self,
        h: &Arc<HostState>,
        how: &Login,
        get: &dyn Fn(&[&str]) -> Option<String>,
    ) -> Result<Context, String> {
        if let Some(r) = h.base.lock().get(how) {
            match r {
                Ok(c) if self.router.is_connected(c.id()) => return Ok(c.clone()),
                Ok(_) => {}
                Err(e) => return Err(e.clone()),
            }
        }
        let _g = h.connecting.lock();
        if let Some(Ok(c)) = h.base.lock().get(how) {
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
                let mut s = Ssh::new(&how.addr).connect_timeout(self.opts.connect_timeout);
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
                        extra.extend(crate::util::shlex_split(&a)?);
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
                    let key = SshDest {
                        user: how.user.clone(),
                        addr: how.addr.clone(),
                        port: how.port.clone(),
                    };
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
        h.base.lock().insert(how.clone(), r.clone());
        r
    }
}
