//! The `fetch` action (`plugins/action/fetch.py`): remote `stat` (without
//! become) or `slurp` for the checksum, the file pulled through
//! `mitogen-service`'s `fetch_file` into `dest/<host>/<path>` (or `dest`
//! with `flat`), sha1 and md5 of what arrived.

use super::{Act, action_failure, boolean};
use crate::error::Error;
use crate::exec::Exec;
use crate::pycompat::b64decode;
use md5::Md5;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use std::path::{Component, Path, PathBuf};

fn sha1_file(p: &Path) -> Option<String> {
    crate::agent::sha1_file(p).ok()
}

fn md5_file(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|d| format!("{:x}", Md5::digest(&d)))
}

/// `os.path.normpath`.
fn normpath(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::ParentDir => {
                if out.last().is_some_and(|l| l != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..".into());
                }
            }
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    let j = out.join("/");
    if abs {
        format!("/{j}")
    } else if j.is_empty() {
        ".".into()
    } else {
        j
    }
}

pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let a = act.args()?;
    if act.task.check_mode {
        let mut d = Map::new();
        d.insert("skipped".into(), true.into());
        d.insert(
            "msg".into(),
            "check mode not (yet) supported for this module".into(),
        );
        act.s.data = d;
        return Ok(());
    }
    let (Some(source), Some(dest)) = (
        a.get("src").and_then(Value::as_str).map(str::to_owned),
        a.get("dest").and_then(Value::as_str).map(str::to_owned),
    ) else {
        act.s.data = action_failure("src and dest are required");
        return Ok(());
    };
    let flat = boolean(a.get("flat"), false);
    let fail_on_missing = boolean(a.get("fail_on_missing"), true);
    let validate = boolean(a.get("validate_checksum"), true);
    let source = super::copy::expand_user(act, &source)?;
    let mut result = Map::new();
    let mut remote_checksum: Option<String> = None;
    if !act.target.escalated {
        match super::copy::remote_stat(act, &source, true, true)? {
            Err(msg) => {
                result.insert("changed".into(), false.into());
                result.insert("file".into(), source.clone().into());
                if fail_on_missing {
                    result.insert("failed".into(), true.into());
                    result.insert("msg".into(), msg.into());
                } else {
                    result.insert("msg".into(), format!("{msg}, ignored").into());
                }
                act.s.data = result;
                return Ok(());
            }
            Ok(st) => {
                remote_checksum = st
                    .get("checksum")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let f = |k: &str| st.get(k).and_then(Value::as_bool) == Some(true);
                if f("exists") && f("isdir") {
                    result.insert("failed".into(), true.into());
                    result.insert("changed".into(), false.into());
                    let mut msg =
                        "remote file is a directory, fetch cannot work on directories".to_owned();
                    if !fail_on_missing {
                        msg.push_str(", not transferring, ignored");
                        result.shift_remove("changed");
                        result.shift_remove("failed");
                    }
                    result.insert("msg".into(), msg.into());
                    act.s.data = result;
                    return Ok(());
                }
            }
        }
    }
    let mut remote_data = None;
    if matches!(remote_checksum.as_deref(), None | Some("1" | "")) {
        let mut m = Map::new();
        m.insert("src".into(), source.clone().into());
        let slurp = act
            .engine
            .exec_module(act, "ansible.legacy.slurp", m, &Exec::default())?;
        if slurp.get("failed").and_then(Value::as_bool) == Some(true) {
            if fail_on_missing {
                result.extend(slurp.clone());
            } else {
                result.insert("file".into(), source.clone().into());
                result.insert("changed".into(), false.into());
            }
            let msg = slurp.get("msg").and_then(Value::as_str).unwrap_or("");
            if msg.contains("not found") {
                result.insert(
                    "msg".into(),
                    "the remote file does not exist, not transferring, ignored".into(),
                );
            } else if msg.to_lowercase().starts_with("source is a directory") {
                result.insert(
                    "msg".into(),
                    "remote file is a directory, fetch cannot work on directories".into(),
                );
            }
            act.s.data = result;
            return Ok(());
        }
        if slurp.get("encoding").and_then(Value::as_str) == Some("base64") {
            remote_data = slurp
                .get("content")
                .and_then(Value::as_str)
                .and_then(b64decode);
        }
        if let Some(d) = &remote_data {
            remote_checksum = Some(format!("{:x}", Sha1::digest(d)));
        }
    }
    let base = act
        .engine
        .base_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let dwim = |d: &str| {
        if d.starts_with('/') {
            d.to_owned()
        } else {
            base.join(d).display().to_string()
        }
    };
    let mut dest_path = dest;
    if flat {
        if Path::new(&dest_path).is_dir() && !dest_path.ends_with('/') {
            act.s.data = action_failure(
                "dest is an existing directory, use a trailing slash if you want to fetch src into that directory",
            );
            return Ok(());
        }
        if dest_path.ends_with('/') {
            let b = source.rsplit('/').next().unwrap_or("");
            dest_path = format!("{dest_path}{b}");
            if Path::new(&dest_path).is_dir() {
                act.s.data = action_failure(&format!(
                    "calculated dest '{dest_path}' is an existing directory, use another path that does not point to an existing directory"
                ));
                return Ok(());
            }
        }
        dest_path = dwim(&dest_path);
    } else {
        dest_path = format!(
            "{}/{}/{}",
            dwim(&dest_path),
            act.target.inventory_name,
            source
        );
    }
    let dest_path = normpath(&dest_path);
    let dp = Path::new(&dest_path);
    let local_checksum = sha1_file(dp);
    if remote_checksum != local_checksum {
        if let Some(parent) = dp.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::LocalFile {
                path: parent.to_owned(),
                source: e,
            })?;
        }
        match &remote_data {
            None => {
                let ctx = &act.target.context;
                mitogen_service::fetch_file(
                    ctx.router(),
                    ctx,
                    &source,
                    dp,
                    &mitogen_service::WriteOptions::default(),
                )
                .map_err(|e| Error::Transfer {
                    path: source.clone(),
                    source: Box::new(e),
                })?;
            }
            Some(d) => std::fs::write(dp, d).map_err(|e| Error::LocalFile {
                path: dp.to_owned(),
                source: e,
            })?,
        }
        let new_checksum = sha1_file(dp);
        let new_md5 = md5_file(dp);
        if validate && new_checksum != remote_checksum {
            result.insert("failed".into(), true.into());
            result.insert("md5sum".into(), new_md5.into());
            result.insert("msg".into(), "checksum mismatch".into());
            result.insert("file".into(), source.into());
            result.insert("dest".into(), dest_path.into());
            result.insert("remote_md5sum".into(), Value::Null);
            result.insert("checksum".into(), new_checksum.into());
            result.insert("remote_checksum".into(), remote_checksum.into());
        } else {
            result.insert("changed".into(), true.into());
            result.insert("md5sum".into(), new_md5.into());
            // 2.20 added the remote path to a successful fetch's result.
            if act.engine.source.version_at_least(2, 20) {
                result.insert("file".into(), source.into());
            }
            result.insert("dest".into(), dest_path.into());
            result.insert("remote_md5sum".into(), Value::Null);
            result.insert("checksum".into(), new_checksum.into());
            result.insert("remote_checksum".into(), remote_checksum.into());
        }
    } else {
        result.insert("changed".into(), false.into());
        result.insert("md5sum".into(), md5_file(dp).into());
        result.insert("file".into(), source.into());
        result.insert("dest".into(), dest_path.into());
        result.insert("checksum".into(), local_checksum.into());
    }
    act.s.data = result;
    Ok(())
}
