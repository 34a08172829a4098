//! The `copy` action (`plugins/action/copy.py`): `content=` or `src=`
//! (a file or a directory tree) from the controller, `remote_src`, the
//! checksum short-circuit (remote `stat`, then `file` for attributes
//! only), `.source` transfer through `mitogen-service`, the `copy`
//! module, and the controller-built diff (`file _diff_peek` + `slurp`).
//!
//! The remote `stat` (`_execute_remote_stat`, also `fetch`'s) is answered
//! by the agent ([`crate::agent::QuickStat`]: one round trip instead of a
//! module run that starts `file` and `lsattr`) whenever that cannot change
//! the task's result; see [`crate::exec::Engine::quick_stat`] for when.

use super::{Act, action_failure, boolean};
use crate::error::Error;
use crate::exec::Exec;
use crate::pycompat::{b64decode, decode, json_dumps};
use serde_json::{Map, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `C.MAX_FILE_SIZE_FOR_DIFF`.
const MAX_DIFF: u64 = 104_448;
const NO_LOG_AFTER: &str =
    " [[ Diff output has been hidden because 'no_log: true' was specified for this result ]]\n";

/// `FILE_COMMON_ARGUMENTS` and what the file module takes besides.
const REAL_FILE_ARGS: &[&str] = &[
    "mode",
    "owner",
    "group",
    "seuser",
    "serole",
    "selevel",
    "setype",
    "attributes",
    "unsafe_writes",
    "state",
    "path",
    "_original_basename",
    "recurse",
    "force",
    "_diff_peek",
    "src",
];

/// A local file the action copies.
pub(super) struct Source {
    pub(super) full: PathBuf,
    pub(super) rel: String,
}

/// The whole action for `args` (`template` passes its own).
pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let args = act.args()?;
    run_with(act, &args)
}

pub(super) fn run_with(act: &mut Act<'_>, args: &Map<String, Value>) -> Result<(), Error> {
    act.want_tmp = true;
    for internal in ["_original_basename", "_diff_peek"] {
        if args.get(internal).is_some_and(|v| !v.is_null()) {
            act.s.data = action_failure(&format!("Invalid parameter specified: \"{internal}\""));
            return Ok(());
        }
    }
    let source = args
        .get("src")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let content = args.get("content").filter(|v| !v.is_null());
    let dest = args
        .get("dest")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let remote_src = boolean(args.get("remote_src"), false);
    let local_follow = boolean(args.get("local_follow"), true);
    let msg = if source.is_none() && content.is_none() {
        Some("src (or content) is required")
    } else if dest.is_none() {
        Some("dest is required")
    } else if source.is_some() && content.is_some() {
        Some("src and content are mutually exclusive")
    } else if content.is_some() && dest.is_some_and(|d| d.ends_with('/')) {
        Some("can not use content with a dir as dest")
    } else {
        None
    };
    if let Some(m) = msg {
        let mut r = Map::new();
        r.insert("failed".into(), true.into());
        r.insert("msg".into(), m.into());
        act.s.data = ensure_invocation(act, r, args);
        return Ok(());
    }
    let dest = dest.unwrap_or_default().to_owned();
    let mut content_file = None;
    let files: Vec<Source>;
    let mut dirs: Vec<String> = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let source_shown: String;
    if let Some(c) = content {
        let text = match c {
            Value::String(s) => s.clone(),
            Value::Object(_) | Value::Array(_) => json_dumps(c),
            other => crate::pycompat::py_str(other),
        };
        let root = super::template::local_dir(&act.engine.local_tmp)?;
        content_file = Some(TempFile(root.clone()));
        let path = local_tempfile(&root, text.as_bytes())?;
        files = vec![Source {
            rel: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            full: path.clone(),
        }];
        source_shown = path.display().to_string();
    } else if remote_src {
        let data =
            act.engine
                .exec_module(act, "ansible.legacy.copy", args.clone(), &Exec::default())?;
        act.s.data = ensure_invocation(act, data, args);
        return Ok(());
    } else {
        let src = source.unwrap_or_default();
        let found = match act.find_needle("files", src) {
            Ok(p) => p,
            Err(msg) => {
                let r = ensure_invocation(act, Map::new(), args);
                let mut f = action_failure(&format!("Unexpected AnsibleActionFail error: {msg}"));
                for (k, v) in r {
                    f.entry(k).or_insert(v);
                }
                act.s.data = f;
                return Ok(());
            }
        };
        let mut shown = found.display().to_string();
        if src.ends_with('/') && !shown.ends_with('/') {
            shown.push('/');
        }
        source_shown = shown.clone();
        if found.is_dir() {
            let walked = walk(Path::new(&shown), local_follow);
            files = walked.0;
            dirs = walked.1;
            links = walked.2;
        } else {
            files = vec![Source {
                rel: found
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                full: found,
            }];
        }
    }
    let recursive = Path::new(source_shown.trim_end_matches('/')).is_dir() && content.is_none();
    let mut dest = dest;
    if recursive && !dest.ends_with('/') {
        dest.push('/');
    }
    let dest = expand_user(act, &dest)?;
    let mut changed = false;
    let mut module_return = Map::new();
    let mut module_executed = false;
    let mut implicit = std::collections::HashSet::new();
    for f in &files {
        let follow = if dirs.is_empty() {
            boolean(args.get("follow"), false)
        } else {
            false
        };
        let single = files.len() == 1 && dirs.is_empty() && links.is_empty();
        let Some(ret) = copy_file(act, args, f, content.is_some(), &dest, follow, single)? else {
            continue;
        };
        if ret.get("failed").and_then(Value::as_bool) == Some(true) {
            act.s.data = ensure_invocation(act, ret, args);
            return Ok(());
        }
        implicit.insert(String::new());
        module_executed = true;
        changed = changed || ret.get("changed").and_then(Value::as_bool) == Some(true);
        module_return = ret;
    }
    for d in &dirs {
        if implicit.contains(d) {
            continue;
        }
        let mut m = file_args(args);
        m.insert("path".into(), join(&dest, d).into());
        m.insert("state".into(), "directory".into());
        m.insert(
            "mode".into(),
            args.get("directory_mode").cloned().unwrap_or(Value::Null),
        );
        m.insert("recurse".into(), false.into());
        m.shift_remove("src");
        let ret = act
            .engine
            .exec_module(act, "ansible.legacy.file", m, &Exec::default())?;
        if ret.get("failed").and_then(Value::as_bool) == Some(true) {
            act.s.data = ensure_invocation(act, ret, args);
            return Ok(());
        }
        module_executed = true;
        changed = changed || ret.get("changed").and_then(Value::as_bool) == Some(true);
        module_return = ret;
    }
    for (target_path, rel) in &links {
        let mut m = file_args(args);
        m.insert("path".into(), join(&dest, rel).into());
        m.insert("src".into(), target_path.clone().into());
        m.insert("state".into(), "link".into());
        m.insert("force".into(), true.into());
        if !dirs.is_empty() {
            m.insert("follow".into(), false.into());
        }
        if m.get("mode").and_then(Value::as_str) == Some("preserve") {
            m.shift_remove("mode");
        }
        let ret = act
            .engine
            .exec_module(act, "ansible.legacy.file", m, &Exec::default())?;
        module_executed = true;
        if ret.get("failed").and_then(Value::as_bool) == Some(true) {
            act.s.data = ensure_invocation(act, ret, args);
            return Ok(());
        }
        changed = changed || ret.get("changed").and_then(Value::as_bool) == Some(true);
        module_return = ret;
    }
    let mut result = Map::new();
    if module_executed && files.len() == 1 {
        result.extend(module_return);
        if result.contains_key("path") && !result.contains_key("dest") {
            let p = result["path"].clone();
            result.insert("dest".into(), p);
        }
    } else {
        result.insert("dest".into(), dest.into());
        result.insert("src".into(), source_shown.into());
        result.insert("changed".into(), changed.into());
    }
    drop(content_file);
    act.s.data = ensure_invocation(act, result, args);
    Ok(())
}

/// `_ensure_invocation`.
fn ensure_invocation(
    act: &Act<'_>,
    mut result: Map<String, Value>,
    args: &Map<String, Value>,
) -> Map<String, Value> {
    if !result.contains_key("invocation") {
        if act.task.no_log {
            result.insert("invocation".into(), "CENSORED: no_log is set".into());
        } else {
            let mut inv = args.clone();
            inv.insert("module_args".into(), Value::Object(args.clone()));
            result.insert("invocation".into(), Value::Object(inv));
        }
    }
    if let Some(Value::Object(inv)) = result.get_mut("invocation") {
        if inv.contains_key("content") {
            inv.insert(
                "content".into(),
                "CENSORED: content is a no_log parameter".into(),
            );
        }
        if let Some(Value::Object(ma)) = inv.get_mut("module_args") {
            if ma.get("content").is_some_and(|c| !c.is_null()) {
                ma.insert(
                    "content".into(),
                    "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER".into(),
                );
            }
        }
    }
    result
}

fn file_args(args: &Map<String, Value>) -> Map<String, Value> {
    args.iter()
        .filter(|(k, _)| REAL_FILE_ARGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `os.path.join` for remote paths.
fn join(a: &str, b: &str) -> String {
    if b.starts_with('/') || a.is_empty() {
        b.to_owned()
    } else if a.ends_with('/') {
        format!("{a}{b}")
    } else {
        format!("{a}/{b}")
    }
}

/// `_remote_expand_user`.
pub(super) fn expand_user(act: &Act<'_>, path: &str) -> Result<String, Error> {
    if !path.starts_with('~') {
        return Ok(path.to_owned());
    }
    Ok(act
        .target
        .context
        .call_timeout::<crate::agent::ExpandUser>(
            &path.to_owned(),
            std::time::Duration::from_secs(60),
        )?)
}

/// `_execute_remote_stat`; `Err` holds the action's failure message.
pub(super) fn remote_stat(
    act: &mut Act<'_>,
    path: &str,
    follow: bool,
    get_checksum: bool,
) -> Result<Result<Map<String, Value>, String>, Error> {
    if let Some(q) = act.engine.quick_stat(act, path, follow, get_checksum)? {
        let mut st = Map::new();
        st.insert("exists".into(), q.exists.into());
        if q.exists {
            st.insert("isdir".into(), q.isdir.into());
            st.insert("islnk".into(), false.into());
        }
        let sum = match q.checksum {
            Some(c) => c,
            None if !q.exists => "1".to_owned(),
            None => String::new(),
        };
        st.insert("checksum".into(), sum.into());
        return Ok(Ok(st));
    }
    let mut m = Map::new();
    m.insert("path".into(), path.into());
    m.insert("follow".into(), follow.into());
    m.insert("get_checksum".into(), get_checksum.into());
    m.insert("get_size".into(), false.into());
    m.insert("checksum_algorithm".into(), "sha1".into());
    let opts = Exec {
        ignore_unknown_opts: true,
        ..Exec::default()
    };
    let r = act
        .engine
        .exec_module(act, "ansible.legacy.stat", m, &opts)?;
    if r.get("failed").and_then(Value::as_bool) == Some(true) {
        let pick = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let msg = pick("module_stderr")
            .or_else(|| pick("module_stdout"))
            .or_else(|| pick("msg"))
            .unwrap_or_default();
        return Ok(Err(format!(
            "Failed to get information on remote file ({path}): {msg}"
        )));
    }
    let mut st = match r.get("stat") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    if st.get("exists").and_then(Value::as_bool) != Some(true) {
        st.insert("checksum".into(), "1".into());
    }
    if !st.contains_key("checksum") {
        st.insert("checksum".into(), "".into());
    }
    Ok(Ok(st))
}

fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool) == Some(true)
}

/// `_copy_file`: `None` where ansible-core's returns `None` (skipped).
fn copy_file(
    act: &mut Act<'_>,
    args: &Map<String, Value>,
    src: &Source,
    is_content: bool,
    dest: &str,
    follow: bool,
    last: bool,
) -> Result<Option<Map<String, Value>>, Error> {
    let force = boolean(args.get("force"), true);
    let raw = boolean(args.get("raw"), false);
    let mut result = Map::new();
    result.insert("diff".into(), Value::Array(Vec::new()));
    let Ok(meta) = std::fs::metadata(&src.full) else {
        result.insert("failed".into(), true.into());
        result.insert(
            "msg".into(),
            format!(
                "could not find src={}, Could not find or access '{}' on the Ansible Controller.",
                src.full.display(),
                src.full.display()
            )
            .into(),
        );
        return Ok(Some(result));
    };
    let lmode = (args.get("mode").and_then(Value::as_str) == Some("preserve"))
        .then(|| format!("0{:03o}", meta.permissions().mode() & 0o7777));
    // A vaulted source goes decrypted (`decrypt`, default on), from a
    // local temp file, as ansible-core's `get_real_file`.
    let plain;
    let _plain_dir;
    let src = if boolean(args.get("decrypt"), true) && crate::vault::is_encrypted_file(&src.full) {
        let data = std::fs::read(&src.full)
            .map_err(|e| e.to_string())
            .and_then(|d| crate::vault::decrypt(&d).map_err(|e| e.0));
        let data = match data {
            Ok(d) => d,
            Err(msg) => {
                result.insert("failed".into(), true.into());
                result.insert("msg".into(), msg.into());
                return Ok(Some(result));
            }
        };
        let root = super::template::local_dir(&act.engine.local_tmp)?;
        _plain_dir = TempFile(root.clone());
        plain = Source {
            rel: src.rel.clone(),
            full: local_tempfile(&root, &data)?,
        };
        &plain
    } else {
        src
    };
    let mut dest_file = if dest.ends_with('/') {
        join(dest, &src.rel)
    } else {
        dest.to_owned()
    };
    let mut st = match remote_stat(act, &dest_file, follow, force)? {
        Ok(s) => s,
        Err(msg) => return Ok(Some(action_failure(&msg))),
    };
    if flag(&st, "exists") && flag(&st, "isdir") {
        if is_content {
            result.insert("failed".into(), true.into());
            result.insert(
                "msg".into(),
                "can not use content with a dir as dest".into(),
            );
            return Ok(Some(result));
        }
        dest_file = join(dest, &src.rel);
        st = match remote_stat(act, &dest_file, follow, force)? {
            Ok(s) => s,
            Err(msg) => return Ok(Some(action_failure(&msg))),
        };
    }
    if flag(&st, "exists") && !force {
        return Ok(None);
    }
    let local = crate::agent::sha1_file(&src.full).map_err(|e| Error::ReadModule {
        path: src.full.clone(),
        source: e,
    })?;
    let module_return;
    if Some(local.as_str()) != st.get("checksum").and_then(Value::as_str) {
        if act.task.diff && !raw {
            let d = diff_data(act, &dest_file, &src.full, is_content)?;
            if let Some(Value::Array(a)) = result.get_mut("diff") {
                a.push(Value::Object(d));
            }
        }
        if act.task.check_mode {
            result.insert("changed".into(), true.into());
            return Ok(Some(result));
        }
        let tmp = act.make_tmp()?;
        let mut tmp_src = format!("{tmp}.source");
        if let Some(ext) = Path::new(&dest_file)
            .extension()
            .filter(|_| !dest_file.ends_with('/'))
        {
            let name = Path::new(&dest_file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.starts_with('.') || name[1..].contains('.') {
                tmp_src.push('.');
                tmp_src.push_str(&ext.to_string_lossy());
            }
        }
        let to = if raw {
            dest_file.clone()
        } else {
            tmp_src.clone()
        };
        transfer(act, &src.full, &to)?;
        if raw {
            return Ok(None);
        }
        let mut m: Map<String, Value> = args
            .iter()
            .filter(|(k, _)| k.as_str() != "content" && k.as_str() != "decrypt")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("src".into(), tmp_src.into());
        m.insert("dest".into(), dest.into());
        m.insert("_original_basename".into(), src.rel.clone().into());
        m.insert("follow".into(), follow.into());
        if args.get("checksum").is_none_or(|c| c.is_null() || c == "") {
            m.insert("checksum".into(), local.clone().into());
        }
        if let Some(l) = &lmode {
            m.insert("mode".into(), l.clone().into());
        }
        act.last_tmp_use = last;
        module_return = act
            .engine
            .exec_module(act, "ansible.legacy.copy", m, &Exec::default())?;
    } else {
        if raw {
            return Ok(None);
        }
        let mut dest = dest.to_owned();
        if follow {
            if let Ok(nf) = remote_stat(act, &dest_file, false, true)? {
                if flag(&nf, "islnk") {
                    if let Some(l) = nf.get("lnk_source").and_then(Value::as_str) {
                        dest = l.to_owned();
                    }
                }
            }
        }
        let mut m = file_args(args);
        m.insert("dest".into(), dest.into());
        m.insert("_original_basename".into(), src.rel.clone().into());
        m.insert("recurse".into(), false.into());
        m.insert("state".into(), "file".into());
        m.shift_remove("src");
        if let Some(l) = &lmode {
            m.insert("mode".into(), l.clone().into());
        }
        act.last_tmp_use = last;
        module_return = act
            .engine
            .exec_module(act, "ansible.legacy.file", m, &Exec::default())?;
    }
    let mut module_return = module_return;
    if module_return
        .get("checksum")
        .is_none_or(|c| c.is_null() || c == "")
    {
        module_return.insert("checksum".into(), local.into());
    }
    result.extend(module_return);
    Ok(Some(result))
}

/// `_transfer_file`: `put_file` over the context's router.
pub(super) fn transfer(act: &mut Act<'_>, local: &Path, remote: &str) -> Result<(), Error> {
    let t = std::time::Instant::now();
    act.timings.round_trips += 1;
    let ctx = &act.target.context;
    let opts = mitogen_service::WriteOptions {
        mode: Some(0o600),
        ..Default::default()
    };
    let r = mitogen_service::put_file(ctx.router(), ctx, local, remote, &opts, |_| {})
        .map(|_| ())
        .map_err(|e| Error::Transfer {
            path: remote.to_owned(),
            source: Box::new(e),
        });
    act.timings.calls += t.elapsed();
    r
}

/// `_get_diff_data`.
pub(super) fn diff_data(
    act: &mut Act<'_>,
    destination: &str,
    source: &Path,
    is_content: bool,
) -> Result<Map<String, Value>, Error> {
    let mut diff = Map::new();
    let mut m = Map::new();
    m.insert("path".into(), destination.into());
    m.insert("_diff_peek".into(), true.into());
    let peek = act
        .engine
        .exec_module(act, "ansible.legacy.file", m, &Exec::default())?;
    if flag(&peek, "failed") {
        act.s.warnings.push(format!(
            "Failed to get diff between '{}' and '{destination}': {}",
            source
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            peek.get("msg").and_then(Value::as_str).unwrap_or("")
        ));
        return Ok(diff);
    }
    if peek.get("rc").and_then(Value::as_i64).unwrap_or(0) == 0 {
        let state = peek.get("state").and_then(Value::as_str);
        if state.is_none() || state == Some("absent") {
            diff.insert("before".into(), "".into());
        } else if peek
            .get("appears_binary")
            .is_some_and(|v| v.as_bool() == Some(true))
        {
            diff.insert("dst_binary".into(), 1.into());
        } else if peek
            .get("size")
            .and_then(Value::as_u64)
            .is_some_and(|s| s > MAX_DIFF)
        {
            diff.insert("dst_larger".into(), MAX_DIFF.into());
        } else {
            let mut m = Map::new();
            m.insert("path".into(), destination.into());
            let r = act
                .engine
                .exec_module(act, "ansible.legacy.slurp", m, &Exec::default())?;
            if let Some(c) = r.get("content").and_then(Value::as_str) {
                let bytes = b64decode(c).unwrap_or_default();
                diff.insert("before_header".into(), destination.into());
                diff.insert("before".into(), decode(&bytes).into());
            }
        }
        let size = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
        if size > MAX_DIFF {
            diff.insert("src_larger".into(), MAX_DIFF.into());
        } else {
            let data = std::fs::read(source).map_err(|e| Error::ReadModule {
                path: source.to_owned(),
                source: e,
            })?;
            if data.contains(&0) {
                diff.insert("src_binary".into(), 1.into());
            } else {
                let header = if is_content {
                    destination.to_owned()
                } else {
                    source.display().to_string()
                };
                diff.insert("after_header".into(), header.into());
                diff.insert("after".into(), decode(&data).into());
            }
        }
    }
    if act.task.no_log {
        if diff.contains_key("before") {
            diff.insert("before".into(), "".into());
        }
        if diff.contains_key("after") {
            diff.insert("after".into(), NO_LOG_AFTER.into());
        }
    }
    Ok(diff)
}

/// A controller-side temp dir (`ansible-local-*`) removed on drop.
pub(super) struct TempFile(pub(super) PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `_create_content_tempfile`: `mkstemp(dir=DEFAULT_LOCAL_TMP, prefix='.')`.
fn local_tempfile(dir: &Path, data: &[u8]) -> Result<PathBuf, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(".{}", super::template::rand_name(8)));
    // Owner-only, as `mkstemp`: it may hold a decrypted vault.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Error::LocalFile {
            path: path.clone(),
            source: e,
        })?;
    Ok(path)
}

/// `_walk_dirs` with `local_follow`: files, directories and symlinks
/// relative to the copy's root (`src/` copies the contents, `src` the dir).
fn walk(top: &Path, follow: bool) -> (Vec<Source>, Vec<String>, Vec<(String, String)>) {
    let text = top.display().to_string();
    let base = if text.ends_with('/') {
        text.clone()
    } else {
        top.parent()
            .map(|p| format!("{}/", p.display()))
            .unwrap_or_default()
    };
    let (mut files, mut dirs, mut links) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::from(text.trim_end_matches('/'))];
    if !text.ends_with('/') {
        dirs.push(
            top.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let p = e.path();
            let rel = p
                .display()
                .to_string()
                .strip_prefix(&base)
                .map(str::to_owned)
                .unwrap_or_default();
            let is_link = p
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            if is_link && !(follow && p.exists()) {
                if let Ok(t) = std::fs::read_link(&p) {
                    links.push((t.display().to_string(), rel));
                }
            } else if p.is_dir() {
                dirs.push(rel);
                stack.push(p);
            } else {
                let full = if is_link {
                    std::fs::canonicalize(&p).unwrap_or(p)
                } else {
                    p
                };
                files.push(Source { full, rel });
            }
        }
    }
    // ansible-core's list only has subdirectories of the root.
    if !text.ends_with('/') {
        dirs.remove(0);
    }
    (files, dirs, links)
}
