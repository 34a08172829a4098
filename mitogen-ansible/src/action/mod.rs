//! ansible-core's action plugins, reimplemented: what runs for a task
//! before, around and instead of its module (`plugins/action/*.py`).
//!
//! [`Act`] is one task's action state: the result being shaped, the
//! action's remote tmp dir (made once, shared by every module the action
//! runs, removed at the end as `_remove_tmp_path` does) and the task's
//! interpreter once resolved.

pub(crate) mod async_job;
mod copy;
mod fetch;
mod package;
mod script;
mod template;
pub use template::template_vars;

use crate::agent::{MakeTmp, RemoveTmp, TmpMode, TmpSpec};
use crate::error::Error;
use crate::result::Shaping;
use crate::runner::{REMOTE_TMP, Runner, Target, Task, failure, short_action, task_args};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long making or removing a tmp dir may take.
const TMP_CALL: Duration = Duration::from_secs(60);

/// One task's action state.
pub(crate) struct Act<'a> {
    pub(crate) runner: &'a Runner,
    pub(crate) target: &'a Target,
    pub(crate) task: &'a Task,
    pub(crate) s: Shaping,
    /// The action's tmp dir on the target (with its `/`), once made.
    pub(crate) tmp: Option<String>,
    /// A module result asked to leave the tmp dir (async_wrapper's
    /// `_ansible_suppress_tmpdir_delete`).
    pub(crate) keep_tmp: bool,
    /// `TRANSFERS_FILES`: the first module call makes the action's tmp
    /// dir and keeps it (no round trip of its own).
    pub(crate) want_tmp: bool,
    /// The next module call is the action's last use of its tmp dir: it
    /// removes it afterwards (no round trip of its own).
    pub(crate) last_tmp_use: bool,
    pub(crate) timings: crate::runner::Timings,
}

impl<'a> Act<'a> {
    pub(crate) fn new(runner: &'a Runner, target: &'a Target, task: &'a Task) -> Self {
        Self {
            runner,
            target,
            task,
            s: Shaping::default(),
            tmp: None,
            keep_tmp: false,
            want_tmp: false,
            last_tmp_use: false,
            timings: crate::runner::Timings::default(),
        }
    }

    /// A call to the target, counted in the task's [`Timings`](crate::Timings).
    pub(crate) fn call<F: mitogen_core::Function>(
        &mut self,
        args: &F::Args,
        timeout: Duration,
    ) -> Result<F::Output, mitogen_core::CallError> {
        let t = std::time::Instant::now();
        let r = self.target.context.call_timeout::<F>(args, timeout);
        self.timings.calls += t.elapsed();
        self.timings.round_trips += 1;
        r
    }

    /// Adds a module run's target-side times.
    pub(crate) fn ran(&mut self, run: &crate::agent::RawRun) {
        self.timings.agent += Duration::from_micros(run.agent_us);
        self.timings.module += Duration::from_micros(run.child_us);
    }

    /// Where a module call's files go: the action's dir if it made one,
    /// else a fresh dir for the call.
    pub(crate) fn tmp_mode(&mut self) -> TmpMode {
        match &self.tmp {
            Some(p) => {
                let remove = std::mem::take(&mut self.last_tmp_use)
                    && !self.keep_tmp
                    && !self.task.keep_remote_files;
                let path = p.clone();
                if remove {
                    self.tmp = None;
                }
                TmpMode::Shared { path, remove }
            }
            None => {
                let mut spec = self.tmp_spec();
                spec.keep |= self.want_tmp;
                TmpMode::Fresh(spec)
            }
        }
    }

    /// Takes the tmp dir a module call made and kept (see `want_tmp`).
    pub(crate) fn adopt_tmp(&mut self, run: &crate::agent::RawRun) {
        if self.tmp.is_none() && self.want_tmp {
            self.tmp.clone_from(&run.tmp);
        }
    }

    pub(crate) fn tmp_spec(&self) -> TmpSpec {
        TmpSpec {
            remote_tmp: REMOTE_TMP.into(),
            system: self.target.become_unprivileged,
            keep: self.task.keep_remote_files,
            login_user: self.target.login_user.clone(),
        }
    }

    /// `_make_tmp_path` (once per action): the dir's path with its `/`.
    pub(crate) fn make_tmp(&mut self) -> Result<String, Error> {
        if let Some(t) = &self.tmp {
            return Ok(t.clone());
        }
        let spec = self.tmp_spec();
        let t = self.call::<MakeTmp>(&spec, TMP_CALL)?;
        self.tmp = Some(t.clone());
        Ok(t)
    }

    /// `_remove_tmp_path` at the end of the action, unless kept.
    pub(crate) fn cleanup(&mut self) -> Result<(), Error> {
        let Some(t) = self.tmp.take() else {
            return Ok(());
        };
        if self.keep_tmp || self.task.keep_remote_files {
            return Ok(());
        }
        match self.call::<RemoveTmp>(&t, TMP_CALL) {
            Ok(()) => Ok(()),
            Err(e) if e.kind.is_disconnected() => Err(e.into()),
            Err(e) => {
                self.s.warnings.push(format!(
                    "Error deleting remote temporary files (rc: 1, stderr: {e}}})"
                ));
                Ok(())
            }
        }
    }

    /// The task's args as an object (free-form strings as `_raw_params`).
    pub(crate) fn args(&self) -> Result<Map<String, Value>, Error> {
        task_args(self.task)
    }

    /// `_find_needle(dirname, needle)`: absolute as is, else the first of
    /// `<base>/<dirname>/<needle>` and `<base>/<needle>` that exists.
    pub(crate) fn find_needle(&self, dirname: &str, needle: &str) -> Result<PathBuf, String> {
        let p = Path::new(needle);
        if p.is_absolute() {
            return if p.exists() {
                Ok(p.to_owned())
            } else {
                Err(format!(
                    "Could not find or access '{needle}' on the Ansible Controller.\nIf you are using a module and expect the file to exist on the remote, see the remote_src option"
                ))
            };
        }
        let base = self
            .runner
            .base_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        for c in [base.join(dirname).join(needle), base.join(needle)] {
            if c.exists() {
                let mut s = c.display().to_string();
                if needle.ends_with('/') && !s.ends_with('/') {
                    s.push('/');
                }
                return Ok(PathBuf::from(s));
            }
        }
        Err(format!(
            "Could not find or access '{needle}'\nSearched in:\n\t{}\n\t{} on the Ansible Controller.\nIf you are using a module and expect the file to exist on the remote, see the remote_src option",
            base.join(dirname).join(needle).display(),
            base.join(needle).display(),
        ))
    }
}

/// `ANSIBLE_LOCAL_TEMP`'s default.
pub(crate) fn default_local_tmp() -> PathBuf {
    std::env::var_os("ANSIBLE_LOCAL_TEMP")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ansible/tmp")))
        .unwrap_or_else(|| std::env::temp_dir().join("ansible-local"))
}

/// Actions that may run async (`_supports_async`).
fn supports_async(action: &str) -> bool {
    !matches!(
        action,
        "copy" | "template" | "fetch" | "script" | "raw" | "async_status"
    )
}

/// Runs the task's action; the result is left in `act.s`.
pub(crate) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let runner = act.runner;
    let task = act.task;
    let action = short_action(&task.name);
    if task.async_limit > 0 && !supports_async(action) {
        act.s.data = action_failure(&format!(
            "This action ({}) does not support async.",
            task.name
        ));
        return Ok(());
    }
    match action {
        "raw" => runner.raw(act)?,
        "command" | "shell" => runner.command(act)?,
        "copy" => copy::run(act)?,
        "template" => template::run(act)?,
        "fetch" => fetch::run(act)?,
        "script" => script::run(act)?,
        "async_status" => async_job::status_action(act)?,
        "package" => package::package(act)?,
        "service" => package::service(act)?,
        // Never a module run bare where ansible-core runs an action
        // plugin in front of it.
        _ if runner.source.unsupported_action(&task.name).is_some() => {
            return Err(Error::UnsupportedAction(task.name.clone()));
        }
        a => {
            let args = task_args(task)?;
            runner.normal(act, &task.name, args)?;
            if a == "setup" {
                act.s
                    .data
                    .insert("_ansible_verbose_override".into(), true.into());
            }
        }
    }
    if task.async_limit > 0 && task.poll > 0 {
        let d = &act.s.data;
        let truthy = |k: &str| {
            d.get(k)
                .is_some_and(|v| v.as_bool() != Some(false) && !v.is_null())
        };
        if !truthy("skipped") && !truthy("failed") {
            async_job::poll(act)?;
        }
    }
    Ok(())
}

/// An `AnsibleActionFail(msg)` raised by an action: the executor's shape
/// (unlike other errors, without the "Task failed: " prefix).
pub(crate) fn action_failure(msg: &str) -> Map<String, Value> {
    let mut m = failure(msg);
    m.insert("msg".into(), msg.into());
    m
}

/// `boolean(value, strict=False)`.
pub(crate) fn boolean(v: Option<&Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(Value::String(s)) => matches!(
            s.to_lowercase().as_str(),
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0"
        ),
        Some(_) => false,
    }
}
