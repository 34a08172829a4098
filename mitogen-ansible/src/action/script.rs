//! The `script` action (`plugins/action/script.py`): a controller file
//! copied into the tmp dir (through `mitogen-service`) and run with the
//! task's arguments, its output as ssh `-tt` shows it.

use super::{Act, action_failure};
use crate::agent::{FileKind, ProcTask, RunProcess, TmpMode};
use crate::error::Error;
use crate::exec::{CALL_SLACK, env_string, millis, raw_result};
use crate::pycompat::{shlex_quote, shlex_split};
use serde_json::{Map, Value};

fn skip(act: &mut Act<'_>, msg: &str) {
    let mut d = Map::new();
    d.insert("skipped".into(), true.into());
    d.insert("msg".into(), msg.into());
    act.s.data = d;
}

/// `test -e PATH` on the target as the become user.
fn remote_exists(act: &mut Act<'_>, path: &str) -> Result<bool, Error> {
    let cwd = act.engine.cwd(act.target);
    let run = act.call::<RunProcess>(
        &ProcTask {
            files: Vec::new(),
            command: format!("test -e {}", shlex_quote(path)),
            tmp: None,
            env: Vec::new(),
            cwd,
            timeout_ms: 60_000,
        },
        std::time::Duration::from_secs(60) + CALL_SLACK,
    )?;
    Ok(run.rc == 0)
}

pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let a = act.args()?;
    let s = |k: &str| {
        a.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (raw, cmd) = (s("_raw_params"), s("cmd"));
    let raw_params = match (raw, cmd) {
        (Some(_), Some(_)) => {
            act.s.data = action_failure("parameters are mutually exclusive: _raw_params, cmd");
            return Ok(());
        }
        (None, None) => {
            act.s.data = action_failure("one of the following is required: _raw_params, cmd");
            return Ok(());
        }
        (Some(r), None) | (None, Some(r)) => r,
    };
    if let Some(c) = s("creates") {
        if remote_exists(act, &c)? {
            skip(act, &format!("{c} exists, matching creates option"));
            return Ok(());
        }
    }
    if let Some(r) = s("removes") {
        if !remote_exists(act, &r)? {
            skip(act, &format!("{r} does not exist, matching removes option"));
            return Ok(());
        }
    }
    let chdir = s("chdir");
    if let Some(c) = &chdir {
        if !c.starts_with('/') {
            act.s.data = action_failure(&format!(
                "chdir {c} must be an absolute path for a Unix-aware remote node"
            ));
            return Ok(());
        }
    }
    let parts = shlex_split(raw_params.trim()).unwrap_or_default();
    let Some(first) = parts.first().cloned() else {
        act.s.data = action_failure("no script given");
        return Ok(());
    };
    let source = match act.find_needle("files", &first) {
        Ok(p) => p,
        Err(m) => {
            act.s.data = action_failure(&m);
            return Ok(());
        }
    };
    if act.task.check_mode {
        if s("creates").is_some() || s("removes").is_some() {
            let mut d = Map::new();
            d.insert("changed".into(), true.into());
            act.s.data = d;
        } else {
            skip(act, "Check mode is not supported for this task.");
            act.s.data.insert("changed".into(), false.into());
        }
        return Ok(());
    }
    let data = std::fs::read(&source).map_err(|e| Error::LocalFile {
        path: source.clone(),
        source: e,
    })?;
    let tmp = act.make_tmp()?;
    // The script's run is the dir's last use: removed after it.
    let remove = !act.task.keep_remote_files;
    act.tmp = None;
    let base = source
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_src = format!("{tmp}{base}");
    let target_command = raw_params.trim().replace(&first, &tmp_src);
    let env = env_string(act.task);
    let mut script_cmd = match s("executable") {
        Some(e) => [env, e, target_command].join(" "),
        None => [env, target_command].join(" "),
    };
    if let Some(c) = &chdir {
        script_cmd = format!("cd {c} && {script_cmd}");
    }
    let (target, task, engine) = (act.target, act.task, act.engine);
    let run = act.call::<RunProcess>(
        &ProcTask {
            files: vec![(base, data, FileKind::Plain)],
            command: format!("{script_cmd} && sleep 0"),
            tmp: Some(TmpMode::Shared { path: tmp, remove }),
            env: Vec::new(),
            cwd: engine.cwd(target),
            timeout_ms: millis(task.timeout),
        },
        task.timeout + CALL_SLACK,
    )?;
    let run = engine.transport_view(target, run);
    act.s.data = raw_result(&run);
    Ok(())
}
