//! Running one module on a target: its payload staged in the target's
//! cache tree, run in the agent's fork server (new-style Python) or as a
//! process (everything else), its output parsed as ansible-core does.

use super::{Act, CALL_SLACK, Engine, Exec, Prepared, REMOTE_TMP, env_string, failure, millis};
use crate::agent::{
    FileKind, FileRef, ProcTask, PyOutcome, PyTask, RawRun, RunProcess, RunPython, Stage,
    StageOutcome, StageReq, TMPDIR_TOKEN, TmpMode,
};
use crate::args::{self, Internal};
use crate::error::Error;
use crate::pycompat::shlex_join;
use crate::result::{self};
use crate::source::{Module, PayloadFile, Style, extract_interpreter};
use crate::task::{Target, Task};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A call that carried a payload: done, or the files the target lacks.
enum Sent<T> {
    Done(T),
    NeedBlobs(Vec<String>),
}

impl Engine {
    /// Links `module`'s payload into this runner's tree on `target` and
    /// returns the tree's path there (for modules run as processes).
    pub(crate) fn stage(&self, target: &Target, module: &Module) -> Result<String, Error> {
        self.with_payload(target, module, |prepared, blobs| {
            let req = StageReq {
                tree: self.tree.clone(),
                files: prepared.files.clone(),
                blobs,
            };
            Ok(
                match target
                    .context
                    .call_timeout::<Stage>(&req, Duration::from_secs(300))?
                {
                    StageOutcome::Ready(tree) => Sent::Done(tree),
                    StageOutcome::NeedBlobs(missing) => Sent::NeedBlobs(missing),
                },
            )
        })
    }

    /// Sends `module`'s payload with `call`: first the files this context
    /// is not known to hold, then whatever it says it lacks (its cache may
    /// have been cleaned), once. The context then holds them all.
    fn with_payload<T>(
        &self,
        target: &Target,
        module: &Module,
        mut call: impl FnMut(&Prepared, Vec<(String, Vec<u8>)>) -> Result<Sent<T>, Error>,
    ) -> Result<T, Error> {
        let prepared = self.prepared(module)?;
        let id = target.context.id();
        let known: HashSet<String> = self
            .contexts
            .lock()
            .get(&id)
            .map(|c| c.blobs.clone())
            .unwrap_or_default();
        let mut want: Vec<String> = prepared
            .files
            .iter()
            .map(|f| f.sha256.clone())
            .filter(|h| !known.contains(h))
            .collect();
        for _attempt in 0..2 {
            let mut blobs = Vec::new();
            for h in &want {
                if let Some(src) = prepared.sources.get(h) {
                    blobs.push((h.clone(), read_source(src)?));
                }
            }
            match call(&prepared, blobs)? {
                Sent::Done(out) => {
                    self.contexts
                        .lock()
                        .entry(id)
                        .or_default()
                        .blobs
                        .extend(prepared.files.iter().map(|f| f.sha256.clone()));
                    return Ok(out);
                }
                Sent::NeedBlobs(missing) => want = missing,
            }
        }
        Err(Error::ModuleUtils {
            module: module.name.clone(),
            message: "the target kept asking for payload files it was sent".into(),
        })
    }

    /// `user_args` with the `_ansible_*` keys `_update_module_args` adds
    /// for `task` running module `name` on `target`.
    pub(crate) fn module_args(
        &self,
        target: &Target,
        task: &Task,
        name: &str,
        user_args: &Map<String, Value>,
        ignore_unknown_opts: bool,
    ) -> Map<String, Value> {
        let internal = Internal {
            check_mode: task.check_mode,
            no_log: task.no_log,
            diff: task.diff,
            version: self.source.version(),
            module_name: name,
            tmpdir: (!target.become_unprivileged).then_some(TMPDIR_TOKEN),
            remote_tmp: REMOTE_TMP,
            keep_remote_files: task.keep_remote_files,
            ignore_unknown_opts,
        };
        args::with_internal(user_args, &internal)
    }

    /// `ActionBase._execute_module`: runs module `name` with `user_args`
    /// in the action's tmp dir (or a fresh one per call) and returns its
    /// parsed, post-processed data. Warnings go to the action's list.
    pub(crate) fn exec_module(
        &self,
        act: &mut Act<'_>,
        name: &str,
        user_args: Map<String, Value>,
        opts: &Exec,
    ) -> Result<Map<String, Value>, Error> {
        let saved = std::mem::take(&mut act.s.data);
        let r = self.exec_module_into(act, name, user_args, opts);
        let data = std::mem::replace(&mut act.s.data, saved);
        r.map(|()| data)
    }

    fn exec_module_into(
        &self,
        act: &mut Act<'_>,
        name: &str,
        user_args: Map<String, Value>,
        opts: &Exec,
    ) -> Result<(), Error> {
        let (target, task) = (act.target, act.task);
        let module = self.find(name)?;
        if opts.wrap_async {
            return super::async_wrap::start(self, act, &module, name, user_args);
        }
        let margs = self.module_args(target, task, name, &user_args, opts.ignore_unknown_opts);
        let env_string = env_string(task);
        let tmp_mode = act.tmp_mode();
        match module.style {
            Style::NewPython => {
                let (python, discovered) = self.python(target, &mut act.s)?;
                let t = std::time::Instant::now();
                let run = self.run_python(target, task, &module, &python, &margs, tmp_mode)?;
                act.timings.calls += t.elapsed();
                act.timings.round_trips += 1;
                act.ran(&run);
                act.adopt_tmp(&run);
                let run = self.module_transport_view(target, run);
                result::parse(&run, Some(&python), &mut act.s);
                if act.s.data.get("_ansible_parsed") == Some(&Value::Bool(true)) {
                    let mut c = self.contexts.lock();
                    let c = c.entry(target.context.id()).or_default();
                    if !c.python_ran.contains(&python) {
                        c.python_ran.insert(python.clone());
                    }
                }
                result::after_module(&mut act.s, discovered.as_deref());
            }
            Style::PowerShell => {
                act.s.data = failure(&format!(
                    "module ({}) is a PowerShell module: Windows targets are not supported",
                    module.name
                ));
            }
            style => {
                let Some((files, cmd, interp, discovered)) =
                    self.process_module(act, &module, style, &margs)?
                else {
                    return Ok(());
                };
                let mut cmd = cmd;
                if !env_string.is_empty() {
                    cmd = format!("{env_string} {cmd}");
                }
                let run = act.call::<RunProcess>(
                    &ProcTask {
                        files,
                        command: format!("{cmd} && sleep 0"),
                        tmp: Some(tmp_mode),
                        env: Vec::new(),
                        cwd: self.cwd(target),
                        timeout_ms: millis(task.timeout),
                    },
                    task.timeout + CALL_SLACK,
                )?;
                act.ran(&run);
                act.adopt_tmp(&run);
                let run = self.transport_view(target, run);
                result::parse(&run, interp.as_deref(), &mut act.s);
                result::after_module(&mut act.s, discovered.as_deref());
            }
        }
        if act
            .s
            .data
            .shift_remove("_ansible_suppress_tmpdir_delete")
            .is_some()
        {
            act.keep_tmp = true;
        }
        Ok(())
    }

    /// The files and command of a module run as its own process
    /// (`None`: the action failed, `act.s.data` says why). Commands are
    /// built as `build_module_command`: `shlex.join([interp, module, args])`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn process_module(
        &self,
        act: &mut Act<'_>,
        module: &Module,
        style: Style,
        margs: &Map<String, Value>,
    ) -> Result<
        Option<(
            Vec<(String, Vec<u8>, FileKind)>,
            String,
            Option<String>,
            Option<String>,
        )>,
        Error,
    > {
        let target = act.target;
        let remote = module.remote_name();
        let (mut data, shebang, discovered) = if style == Style::Binary {
            ((*module.data).clone(), None, None)
        } else {
            let Some((interp, iargs)) = extract_interpreter(&module.data) else {
                act.s.data = failure(&format!(
                    "module ({}) is missing interpreter line",
                    module.name
                ));
                return Ok(None);
            };
            let (new, discovered) = self.shebang_interpreter(target, &interp, &mut act.s)?;
            let mut shebang = format!("#!{new}");
            if !iargs.is_empty() {
                shebang = format!("{shebang} {}", iargs.join(" "));
            }
            let mut data = (*module.data).clone();
            if new != interp {
                let rest = data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(Vec::new(), |i| data[i..].to_vec());
                data = shebang.clone().into_bytes();
                data.extend_from_slice(&rest);
            }
            (data, Some(shebang), discovered)
        };
        let mut files = Vec::new();
        let mut arg_path = None;
        match style {
            Style::JsonArgs => {
                data = args::jsonargs_source(&data, margs, self.source.version());
                files.push((remote.clone(), data, FileKind::Templated));
            }
            _ => {
                files.push((remote.clone(), data, FileKind::Plain));
                let text = if style == Style::Old {
                    args::old_style_file(margs)
                } else {
                    args::json_file(margs)
                };
                files.push(("args".into(), text.into_bytes(), FileKind::Templated));
                arg_path = Some(format!("{TMPDIR_TOKEN}args"));
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(sb) = &shebang {
            parts.push(sb.trim_start_matches("#!").trim().to_owned());
        }
        parts.push(format!("{TMPDIR_TOKEN}{remote}"));
        parts.extend(arg_path);
        let interp = shebang
            .as_deref()
            .map(|s| s.trim_start_matches("#!").trim().to_owned());
        Ok(Some((files, shlex_join(&parts), interp, discovered)))
    }

    fn prepared(&self, module: &Module) -> Result<Arc<Prepared>, Error> {
        let key = format!(
            "{}\0{}",
            module.fqn,
            module
                .path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
        let slot = self.payloads.lock().entry(key).or_default().clone();
        let mut slot = slot.lock();
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let files = self.source.payload(module)?;
        let p = Arc::new(Prepared {
            files: files
                .iter()
                .map(|f| FileRef {
                    rel: f.rel.clone(),
                    sha256: f.sha256.clone(),
                })
                .collect(),
            sources: files.into_iter().map(|f| (f.sha256.clone(), f)).collect(),
        });
        *slot = Some(p.clone());
        Ok(p)
    }

    fn run_python(
        &self,
        target: &Target,
        task: &Task,
        module: &Module,
        python: &str,
        margs: &Map<String, Value>,
        tmp: TmpMode,
    ) -> Result<RawRun, Error> {
        let params = json!({ "ANSIBLE_MODULE_ARGS": margs }).to_string();
        self.with_payload(target, module, |prepared, blobs| {
            let req = PyTask {
                interpreter: python.to_owned(),
                tree: self.tree.clone(),
                files: prepared.files.clone(),
                blobs,
                fqn: module.fqn.clone(),
                remote_name: format!("{}.py", module.remote_name().trim_end_matches(".py")),
                params: params.clone(),
                tmp: tmp.clone(),
                env: task.environment.clone(),
                cwd: self.cwd(target),
                timeout_ms: millis(task.timeout),
                rlimit_nofile: task.rlimit_nofile,
            };
            Ok(
                match target
                    .context
                    .call_timeout::<RunPython>(&req, task.timeout + CALL_SLACK)?
                {
                    PyOutcome::Ran(run) => Sent::Done(run),
                    PyOutcome::NeedBlobs(missing) => Sent::NeedBlobs(missing),
                },
            )
        })
    }
}

fn read_source(src: &PayloadFile) -> Result<Vec<u8>, Error> {
    match (&src.text, &src.path) {
        (Some(t), _) => Ok(t.clone().into_bytes()),
        (None, Some(p)) => std::fs::read(p).map_err(|e| Error::ReadModule {
            path: p.clone(),
            source: e,
        }),
        (None, None) => Ok(Vec::new()),
    }
}
