//! `assemble`: ansible-core's action plugin. With `remote_src` (the
//! default) the module joins the fragments on the target; otherwise the
//! fragments of a controller directory (found as a `files/` source) are
//! joined here, and the result goes as `copy` sends a file, or the `file`
//! module runs where the target has it already.

use super::copy::{TempFile, diff_data, expand_user, remote_stat, transfer};
use super::template::{local_dir, rand_name};
use super::{Act, action_failure, boolean};
use crate::error::Error;
use crate::exec::{Exec, task_args};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Options the action reads and the modules after it do not take.
const ASSEMBLE_ONLY: &[&str] = &[
    "remote_src",
    "regexp",
    "delimiter",
    "ignore_hidden",
    "decrypt",
];

pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let mut args = task_args(act.task)?;
    let decrypt = boolean(args.shift_remove("decrypt").as_ref(), true);
    let text = |k: &str| match args.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(crate::pycompat::py_str(v)),
    };
    let (Some(src), Some(dest)) = (text("src"), text("dest")) else {
        act.s.data = action_failure("src and dest are required");
        return Ok(());
    };
    let remote_src = match args.get("remote_src") {
        None => true,
        v => boolean(v, false),
    };
    if remote_src {
        return super::normal::normal(act, "ansible.legacy.assemble", args);
    }
    let src = match act.find_needle("files", &src) {
        Ok(p) => p,
        Err(m) => {
            act.s.data = action_failure(&m);
            return Ok(());
        }
    };
    if !src.is_dir() {
        act.s.data = action_failure(&format!("Source ({}) is not a directory", src.display()));
        return Ok(());
    }
    let regexp = match text("regexp").map(|r| regex::Regex::new(&r)) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            act.s.data = action_failure(&format!("Invalid regular expression: {e}"));
            return Ok(());
        }
    };
    let delimiter = text("delimiter").map(|d| escape_decode(&d));
    let ignore_hidden = boolean(args.get("ignore_hidden"), false);
    let follow = boolean(args.get("follow"), false);
    let root = local_dir(&act.engine.local_tmp)?;
    let _cleanup = TempFile(root.clone());
    let path = root.join(format!("tmp{}", rand_name(8)));
    let joined = match fragments(
        &src,
        delimiter.as_deref(),
        regexp.as_ref(),
        ignore_hidden,
        decrypt,
    ) {
        Ok(b) => b,
        Err(m) => {
            act.s.data = action_failure(&m);
            return Ok(());
        }
    };
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&joined))
        .map_err(|e| Error::LocalFile {
            path: path.clone(),
            source: e,
        })?;
    let checksum = crate::agent::sha1_file(&path).map_err(|e| Error::ReadModule {
        path: path.clone(),
        source: e,
    })?;
    let dest = expand_user(act, &dest)?;
    let st = match remote_stat(act, &dest, follow, true)? {
        Ok(s) => s,
        Err(m) => {
            act.s.data = action_failure(&m);
            return Ok(());
        }
    };
    for k in ASSEMBLE_ONLY {
        args.shift_remove(*k);
    }
    args.insert("dest".into(), dest.clone().into());
    if Some(checksum.as_str()) == st.get("checksum").and_then(Value::as_str) {
        act.s.data = act
            .engine
            .exec_module(act, "ansible.legacy.file", args, &Exec::default())?;
        return Ok(());
    }
    let diff = if act.task.diff {
        Some(diff_data(act, &dest, &path, false)?)
    } else {
        None
    };
    let tmp = act.make_tmp()?;
    let remote = format!("{}/src", tmp.trim_end_matches('/'));
    transfer(act, &path, &remote)?;
    args.insert("src".into(), remote.into());
    let mut res = act
        .engine
        .exec_module(act, "ansible.legacy.copy", args, &Exec::default())?;
    if let Some(d) = diff.filter(|d| !d.is_empty()) {
        res.insert("diff".into(), Value::Object(d));
    }
    act.s.data = res;
    Ok(())
}

/// `_assemble_from_fragments`: the regular files of `dir` in name order
/// (matching `regexp`, not hidden with `ignore_hidden`), a newline after
/// any that lacks one, `delimiter` (and a newline) between them; vaulted
/// ones decrypted with `decrypt`.
fn fragments(
    dir: &Path,
    delimiter: Option<&[u8]>,
    regexp: Option<&regex::Regex>,
    ignore_hidden: bool,
    decrypt: bool,
) -> Result<Vec<u8>, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    let (mut delimit, mut add_newline) = (false, false);
    for name in names {
        if regexp.is_some_and(|r| !r.is_match(&name)) {
            continue;
        }
        let path: PathBuf = dir.join(&name);
        if !path.is_file() || (ignore_hidden && name.starts_with('.')) {
            continue;
        }
        let mut data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if decrypt && crate::vault::is_encrypted_file(&path) {
            data = crate::vault::decrypt(&data).map_err(|e| e.0)?;
        }
        if add_newline {
            out.push(b'\n');
        }
        if delimit {
            if let Some(d) = delimiter {
                out.extend_from_slice(d);
                if d.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
        }
        out.extend_from_slice(&data);
        delimit = true;
        add_newline = !data.ends_with(b"\n");
    }
    Ok(out)
}

/// Python's `codecs.escape_decode`: `\n`, `\t`, `\\`, `\xHH`, octal and
/// the other backslash escapes of a bytes literal; anything else as it is.
fn escape_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(c),
            b'\n' => {}
            b'x' => {
                let hex = b.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_decode;

    #[test]
    fn escapes_as_python_bytes_literals() {
        assert_eq!(escape_decode(r"a\nb"), b"a\nb");
        assert_eq!(escape_decode(r"\x41\101\q"), b"AA\\q");
        assert_eq!(escape_decode("#--- \\t end"), b"#--- \t end");
    }
}
