//! The interpreter a module runs under: `ansible_python_interpreter`, or
//! discovered once per context as ansible-core's `interpreter_discovery`
//! does (and reported as its fact and warning), and the agent's answer to
//! `_execute_remote_stat` when that is the same as running `stat`.

use super::{Act, Engine};
use crate::agent::Discover;
use crate::error::Error;
use crate::result::Shaping;
use crate::task::Target;
use mitogen_core::ContextId;
use std::time::Duration;

/// ansible-core's `INTERPRETER_PYTHON_FALLBACK`.
const PYTHON_FALLBACK: [&str; 8] = [
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "/usr/bin/python3",
    "python3",
];
impl Engine {
    /// A task that reported the discovered interpreter on this context
    /// ended ok: ansible-core has it as a host fact from now on.
    pub(crate) fn python_fact_saved(&self, id: ContextId) {
        if let Some(c) = self.contexts.lock().get_mut(&id) {
            c.python_fact_saved = true;
        }
    }

    /// The interpreter for a `#!` interpreter: python via discovery or
    /// `ansible_python_interpreter`, others via `ansible_<x>_interpreter`.
    pub(crate) fn shebang_interpreter(
        &self,
        target: &Target,
        interp: &str,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        let base = interp.rsplit('/').next().unwrap_or(interp).trim();
        if base == "python" {
            return self.python(target, s);
        }
        Ok((
            target
                .interpreters
                .get(base)
                .cloned()
                .unwrap_or_else(|| interp.to_owned()),
            None,
        ))
    }

    /// `_execute_remote_stat`'s answer computed by the agent instead of a
    /// run of the `stat` module (one round trip, no fork, no `file` or
    /// `lsattr` processes), when that cannot change the task's result: the
    /// module is ansible-core's own (not a `library/stat.py`), and the
    /// interpreter it would run under is settled (no discovery to run or
    /// report in this task) and has run a module on this context. `None`:
    /// run the module (also for whatever [`crate::agent::QuickStat`] leaves
    /// to it).
    pub(crate) fn quick_stat(
        &self,
        act: &mut Act<'_>,
        path: &str,
        follow: bool,
        checksum: bool,
    ) -> Result<Option<crate::agent::QuickStatOut>, Error> {
        let target = act.target;
        if self.find("ansible.legacy.stat")?.fqn != "ansible.modules.stat" {
            return Ok(None);
        }
        let settled = {
            let contexts = self.contexts.lock();
            let Some(c) = contexts.get(&target.context.id()) else {
                return Ok(None);
            };
            let python = match &act.s.python {
                Some((p, _)) => Some(p.as_str()),
                None if is_auto(&target.python) => {
                    c.python.as_deref().filter(|_| c.python_fact_saved)
                }
                None => Some(target.python.as_str()),
            };
            python.is_some_and(|p| c.python_ran.contains(p))
        };
        if !settled {
            return Ok(None);
        }
        let req = crate::agent::StatReq {
            path: path.to_owned(),
            follow,
            checksum,
        };
        let t = std::time::Instant::now();
        let out = target
            .context
            .call_timeout::<crate::agent::QuickStat>(&req, Duration::from_secs(90))?;
        act.timings.calls += t.elapsed();
        act.timings.round_trips += 1;
        Ok(out)
    }

    /// The python interpreter for `target`, discovering it once per context;
    /// the second value is set when it was discovered (for the fact).
    pub(crate) fn python(
        &self,
        target: &Target,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        if let Some(p) = &s.python {
            return Ok(p.clone());
        }
        let p = self.resolve_python(target, s)?;
        s.python = Some(p.clone());
        Ok(p)
    }

    fn resolve_python(
        &self,
        target: &Target,
        s: &mut Shaping,
    ) -> Result<(String, Option<String>), Error> {
        let mode = target.python.as_str();
        if !is_auto(mode) {
            return Ok((mode.to_owned(), None));
        }
        let id = target.context.id();
        let (known, saved) = self
            .contexts
            .lock()
            .get(&id)
            .map_or((None, false), |c| (c.python.clone(), c.python_fact_saved));
        if let (Some(p), true) = (&known, saved) {
            return Ok((p.clone(), None));
        }
        let found = match known {
            Some(p) => p,
            None => {
                let fallback: Vec<String> =
                    PYTHON_FALLBACK.iter().map(|s| (*s).to_owned()).collect();
                let out = target
                    .context
                    .call_timeout::<Discover>(&fallback, Duration::from_secs(90))?;
                let p = parse_discovery(&out);
                self.contexts.lock().entry(id).or_default().python = Some(p.clone());
                p
            }
        };
        if !mode.ends_with("_silent") {
            s.warnings.push(format!(
                "Host '{}' is using the discovered Python interpreter at '{found}', but future installation of another Python interpreter could cause a different interpreter to be discovered.",
                target.inventory_name
            ));
        }
        Ok((found.clone(), Some(found)))
    }
}

/// `interpreter_python` values that discover.
fn is_auto(mode: &str) -> bool {
    matches!(
        mode,
        "auto" | "auto_silent" | "auto_legacy" | "auto_legacy_silent" | ""
    )
}

/// The discovery command's answer: the first line starting with `/`
/// between `FOUND` and `ENDFOUND`, else `/usr/bin/python3`.
fn parse_discovery(out: &str) -> String {
    out.lines()
        .skip_while(|l| l.trim() != "FOUND")
        .skip(1)
        .take_while(|l| l.trim() != "ENDFOUND")
        .find(|l| l.starts_with('/'))
        .map_or_else(|| "/usr/bin/python3".to_owned(), |l| l.trim().to_owned())
}
