//! [`Runner`]: the facade another tool composes. It runs one [`Task`] on
//! one [`Target`] through the task's action (`action/`), built from the
//! execution primitives (`exec/`), and shapes the result as ansible-core's
//! executor does.

use crate::action;
use crate::error::Error;
use crate::exec::{Act, Engine};
use crate::result::{self, Status};
use crate::source::ModuleSource;
use crate::task::{Target, Task, TaskResult, Timings};
use mitogen_core::CallError;
use serde_json::{Value, json};

/// Runs tasks on targets with ansible-core's semantics.
///
/// One `Runner` serves many targets and threads: it remembers per target
/// context what it learnt there (the discovered interpreter, the payload
/// files already sent), so keep one for a run rather than one per task.
pub struct Runner {
    engine: Engine,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("source", &self.engine.source)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Where this runner takes modules from (and which ansible-core).
    pub fn source(&self) -> &ModuleSource {
        &self.engine.source
    }

    /// A runner using `source` for modules.
    pub fn new(source: ModuleSource) -> Self {
        Self {
            engine: Engine::new(source),
        }
    }

    /// `ANSIBLE_LOCAL_TEMP` (default `~/.ansible/tmp`): where `copy
    /// content=` and `template` put the files they render.
    pub fn local_tmp(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.engine.local_tmp = dir.into();
        self
    }

    /// The playbook dir: relative `src` of `copy`, `template` and `script`
    /// is looked up in its `files/` or `templates/` and in it (the search
    /// path of `_find_needle`); default the current dir.
    pub fn base_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.engine.base_dir = Some(dir.into());
        self
    }
    /// Runs `task` on `target` and shapes the result as ansible-core does.
    ///
    /// A lost connection is `Ok` with [`Status::Unreachable`]; module
    /// failures are `Ok` with [`Status::Failed`].
    ///
    /// # Errors
    /// Unknown modules, missing module_utils, and calls that failed on the
    /// target other than by disconnection.
    pub fn run(&self, target: impl Into<Target>, task: &Task) -> Result<TaskResult, Error> {
        let started = std::time::Instant::now();
        let target = target.into();
        let mut act = Act::new(&self.engine, &target, task);
        let outcome = action::run(&mut act);
        let cleanup = act.cleanup();
        match outcome.and(cleanup) {
            Ok(()) => {}
            Err(Error::Call(e)) if e.kind.is_disconnected() => return Ok(unreachable(&e)),
            Err(e) => return Err(e),
        }
        let mut timings = act.timings;
        let mut s = act.s;
        if !target.discovery_fact {
            if let Some(Value::Object(f)) = s.data.get_mut("ansible_facts") {
                f.shift_remove("discovered_interpreter_python");
                if f.is_empty() {
                    s.data.shift_remove("ansible_facts");
                }
            }
        }
        let reported = s
            .data
            .get("ansible_facts")
            .and_then(|f| f.get("discovered_interpreter_python"))
            .is_some();
        let (status, register, result) = result::finish(s, task.no_log);
        if reported && matches!(status, Status::Ok | Status::Changed) {
            self.engine.python_fact_saved(target.context.id());
        }
        timings.total = started.elapsed();
        Ok(TaskResult {
            status,
            result,
            register,
            timings,
        })
    }
}

fn unreachable(e: &CallError) -> TaskResult {
    let msg = format!("Failed to reach the target: {e}");
    let v = json!({"unreachable": true, "msg": msg, "changed": false});
    TaskResult {
        status: Status::Unreachable,
        result: v.clone(),
        register: v,
        timings: Timings::default(),
    }
}
