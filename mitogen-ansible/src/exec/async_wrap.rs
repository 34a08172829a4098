//! `_execute_module(wrap_async=True)` (§5 of ANSIBLE-PROTOCOL.md): the
//! module runs under ansible-core's own `async_wrapper` module, so job ids,
//! the job files under `~/.ansible_async`, the timeout kill and every
//! result are async_wrapper's. Polling and `async_status` are actions
//! (`action/async_job.rs`).
//!
//! async_wrapper runs the module as a process from a file: for new-style
//! modules that file is a small stand-in for the AnsiballZ wrapper that
//! runs the module from the target's payload cache tree.

use super::{Act, CALL_SLACK, Engine, env_string, failure, millis};
use crate::agent::{FileKind, ProcTask, RunProcess, TMPDIR_TOKEN, TmpMode};
use crate::error::Error;
use crate::pycompat::{json_dumps, shlex_quote};
use crate::result;
use crate::source::{Module, Style};
use serde_json::{Map, Value, json};

/// `async_dir`'s default.
pub(crate) const ASYNC_DIR: &str = "~/.ansible_async";

/// A stand-in for the AnsiballZ wrapper: the module from the cache tree.
fn launcher(python: &str, tree: &str, fqn: &str, params: &str) -> Vec<u8> {
    format!(
        r#"#!{python}
# mitogen-ansible: runs {fqn} from the payload cache as AnsiballZ would.
import os
import sys


def _main():
    try:
        os.getcwd()
    except OSError:
        try:
            os.chdir(os.path.expanduser('~'))
        except OSError:
            os.chdir('/')
    scriptdir = os.path.dirname(os.path.realpath(__file__))
    sys.path = [p for p in sys.path if p not in ('', '.', scriptdir)]
    sys.path.insert(0, {tree})
    from ansible.module_utils._internal._ansiballz import _loader
    _loader.run_module(json_params={params}.encode('utf-8', 'surrogateescape'),
                       profile='legacy', module_fqn={fqn_q}, modlib_path={tree}, extensions={{}})


if __name__ == '__main__':
    _main()
"#,
        tree = py_str_lit(tree),
        params = py_str_lit(params),
        fqn_q = py_str_lit(fqn),
    )
    .into_bytes()
}

/// A Python string literal (JSON's escapes are Python's).
fn py_str_lit(s: &str) -> String {
    json_dumps(&Value::String(s.to_owned()))
}

/// `j<secrets.randbelow(999999999999)>`.
fn job_prefix() -> String {
    format!("j{}", fastrand::u64(..999_999_999_999))
}

/// `_execute_module(wrap_async=True)`: starts the job; the result is
/// async_wrapper's `{started, finished, ansible_job_id, results_file}`.
pub(crate) fn start(
    r: &Engine,
    act: &mut Act<'_>,
    module: &Module,
    name: &str,
    user_args: Map<String, Value>,
) -> Result<(), Error> {
    let (target, task) = (act.target, act.task);
    let tmp = act.make_tmp()?;
    let margs = r.module_args(target, task, name, &user_args, false);
    let (python, discovered) = r.python(target, &mut act.s)?;
    let (mut files, module_file, args_file) = match module.style {
        Style::NewPython => {
            let tree = r.stage(target, module)?;
            let params = json!({ "ANSIBLE_MODULE_ARGS": margs }).to_string();
            let remote = format!("{}.py", module.remote_name().trim_end_matches(".py"));
            let data = launcher(&python, &tree, &module.fqn, &params);
            (
                vec![(remote.clone(), data, FileKind::Templated)],
                remote,
                None,
            )
        }
        Style::PowerShell => {
            act.s.data = failure(&format!(
                "module ({}) is a PowerShell module: Windows targets are not supported",
                module.name
            ));
            return Ok(());
        }
        style => {
            let Some((files, _cmd, _interp, _)) = r.process_module(act, module, style, &margs)?
            else {
                return Ok(());
            };
            let args = (style != Style::JsonArgs).then(|| "args".to_owned());
            (files, module.remote_name(), args)
        }
    };
    let wrapper = r.find("ansible.legacy.async_wrapper")?;
    let tree = r.stage(target, &wrapper)?;
    files.push((
        "async_wrapper.py".into(),
        launcher(
            &python,
            &tree,
            &wrapper.fqn,
            r#"{"ANSIBLE_MODULE_ARGS": {}}"#,
        ),
        FileKind::Plain,
    ));
    let mut env = env_string(task);
    if !env.is_empty() {
        env.push(' ');
    }
    env.push_str(&format!("ANSIBLE_ASYNC_DIR={}", shlex_quote(ASYNC_DIR)));
    let mut cmd = vec![
        env,
        python.clone(),
        format!("{TMPDIR_TOKEN}async_wrapper.py"),
        job_prefix(),
        task.async_limit.to_string(),
        format!("{TMPDIR_TOKEN}{module_file}"),
        args_file.map_or_else(|| "_".to_owned(), |a| format!("{TMPDIR_TOKEN}{a}")),
    ];
    if task.keep_remote_files {
        cmd.push("-preserve_tmp".into());
    }
    let run = act.call::<RunProcess>(
        &ProcTask {
            files,
            command: format!("{} && sleep 0", cmd.join(" ")),
            tmp: Some(TmpMode::Shared {
                path: tmp,
                remove: false,
            }),
            env: Vec::new(),
            cwd: r.cwd(target),
            timeout_ms: millis(task.timeout),
        },
        task.timeout + CALL_SLACK,
    )?;
    let run = r.transport_view(target, run);
    result::parse(&run, Some(&python), &mut act.s);
    result::after_module(&mut act.s, discovered.as_deref());
    // async_wrapper cleans up its tmp dir itself; the controller forgets it.
    act.keep_tmp = true;
    act.s.data.shift_remove("_ansible_suppress_tmpdir_delete");
    act.s.data.insert("changed".into(), true.into());
    Ok(())
}
