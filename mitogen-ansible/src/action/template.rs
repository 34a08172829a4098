//! The `template` action (`plugins/action/template.py`): the template is
//! rendered on the controller with `minijinja` (Jinja2 semantics:
//! `trim_blocks` on, trailing newline kept, undefined variables are
//! errors, custom delimiters) with the task's variables, ansible-core's
//! `template_*` variables and the Ansible filters templates commonly use;
//! the result then goes through the `copy` action.

use super::copy::{self, TempFile};
use super::{Act, action_failure, boolean};
use crate::error::Error;
use crate::pycompat::json_dumps;
use minijinja::value::Value as JValue;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The options only the template action takes (removed before copy).
const TEMPLATE_ONLY: &[&str] = &[
    "newline_sequence",
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
    "trim_blocks",
    "lstrip_blocks",
    "output_encoding",
];

pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let mut args = act.args()?;
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let follow = boolean(args.get("follow"), false);
    let trim_blocks = boolean(args.get("trim_blocks"), true);
    let lstrip_blocks = boolean(args.get("lstrip_blocks"), false);
    let (source, dest, state) = (
        s("src"),
        s("dest"),
        args.get("state").filter(|v| !v.is_null()),
    );
    let mut newline = s("newline_sequence").unwrap_or_else(|| "\n".into());
    newline = match newline.as_str() {
        "\\n" => "\n".into(),
        "\\r" => "\r".into(),
        "\\r\\n" => "\r\n".into(),
        _ => newline,
    };
    let fail = |act: &mut Act<'_>, msg: &str| {
        act.s.data = action_failure(msg);
        Ok(())
    };
    if state.is_some() {
        return fail(act, "'state' cannot be specified on a template");
    }
    let (Some(source), Some(dest)) = (source, dest) else {
        return fail(act, "src and dest are required");
    };
    if !matches!(newline.as_str(), "\n" | "\r" | "\r\n") {
        return fail(act, "newline_sequence needs to be one of: \n, \r or \r\n");
    }
    let full = match act.find_needle("templates", &source) {
        Ok(p) => p,
        Err(m) => return fail(act, &m),
    };
    let mut mode = args.get("mode").cloned().unwrap_or(Value::Null);
    if mode.as_str() == Some("preserve") {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&full).map(|m| m.permissions().mode() & 0o7777);
        mode = format!("0{:03o}", m.unwrap_or(0o644)).into();
    }
    let text = match std::fs::read(&full) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => return fail(act, &format!("Could not read {}: {e}", full.display())),
    };
    let mut vars = act.task.vars.clone();
    for k in ["inventory_hostname", "inventory_hostname_short"] {
        if !vars.contains_key(k) {
            let name = &act.target.inventory_name;
            let v = if k.ends_with("_short") {
                name.split('.').next().unwrap_or(name)
            } else {
                name
            };
            vars.insert(k.into(), v.into());
        }
    }
    for (k, v) in template_vars(
        &source,
        &full,
        Some(&dest),
        !vars.contains_key("ansible_managed"),
    ) {
        vars.insert(k, v);
    }
    let syntax = Syntax {
        block: (
            s("block_start_string").unwrap_or_else(|| "{%".into()),
            s("block_end_string").unwrap_or_else(|| "%}".into()),
        ),
        variable: (
            s("variable_start_string").unwrap_or_else(|| "{{".into()),
            s("variable_end_string").unwrap_or_else(|| "}}".into()),
        ),
        comment: (
            s("comment_start_string").unwrap_or_else(|| "{#".into()),
            s("comment_end_string").unwrap_or_else(|| "#}".into()),
        ),
    };
    let search: Vec<PathBuf> = full.parent().map(Path::to_owned).into_iter().collect();
    let rendered = match render(&text, &vars, &syntax, trim_blocks, lstrip_blocks, &search) {
        Ok(r) => r,
        Err(e) => return fail(act, &e),
    };
    let rendered = if newline == "\n" {
        rendered
    } else {
        rendered.replace('\n', &newline)
    };
    let root = local_dir(&act.runner.local_tmp)?;
    let _cleanup = TempFile(root.clone());
    let dir = root.join(format!("tmp{}", rand_name(8)));
    let base = full
        .file_name()
        .map(|f| f.to_os_string())
        .unwrap_or_default();
    let result_file = dir.join(base);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&result_file, rendered.as_bytes()))
        .map_err(|e| Error::LocalFile {
            path: result_file.clone(),
            source: e,
        })?;
    args.insert("mode".into(), mode);
    for k in TEMPLATE_ONLY {
        args.shift_remove(*k);
    }
    args.insert("src".into(), result_file.display().to_string().into());
    args.insert("dest".into(), dest.into());
    args.insert("follow".into(), follow.into());
    copy::run_with(act, &args)
}

struct Syntax {
    block: (String, String),
    variable: (String, String),
    comment: (String, String),
}

/// `generate_ansible_template_vars` (`dest`: `None` for the `template`
/// lookup).
pub(crate) fn template_vars(
    path: &str,
    full: &Path,
    dest: Option<&str>,
    managed: bool,
) -> Map<String, Value> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(full).ok();
    let uid = meta.as_ref().map_or(0, MetadataExt::uid);
    let mut m = Map::new();
    m.insert("template_host".into(), hostname().into());
    m.insert("template_path".into(), path.into());
    m.insert(
        "template_mtime".into(),
        meta.as_ref().map_or(0, MetadataExt::mtime).into(),
    );
    m.insert(
        "template_uid".into(),
        user_name(uid).map_or_else(|| uid.into(), Value::from),
    );
    m.insert(
        "template_destpath".into(),
        dest.map_or(Value::Null, Value::from),
    );
    m.insert(
        "template_fullpath".into(),
        full.display().to_string().into(),
    );
    if managed {
        m.insert("ansible_managed".into(), "Ansible managed".into());
    }
    m
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn user_name(uid: u32) -> Option<String> {
    let pw = std::fs::read_to_string("/etc/passwd").ok()?;
    pw.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
    })
}

/// Renders `text` as ansible-core's templar does for the template action.
fn render(
    text: &str,
    vars: &Map<String, Value>,
    syntax: &Syntax,
    trim_blocks: bool,
    lstrip_blocks: bool,
    search: &[PathBuf],
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(trim_blocks);
    env.set_lstrip_blocks(lstrip_blocks);
    env.set_keep_trailing_newline(true);
    let sc = minijinja::syntax::SyntaxConfig::builder()
        .block_delimiters(syntax.block.0.clone(), syntax.block.1.clone())
        .variable_delimiters(syntax.variable.0.clone(), syntax.variable.1.clone())
        .comment_delimiters(syntax.comment.0.clone(), syntax.comment.1.clone())
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(sc);
    let dirs = search.to_vec();
    env.set_loader(move |name| {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return std::fs::read_to_string(&p).map(Some).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
                });
            }
        }
        Ok(None)
    });
    add_filters(&mut env);
    // Values print as ansible-core 2.19's templar does: None as nothing,
    // the rest as Python's str() (True, ['a', 1], {'k': 'v'}).
    env.set_formatter(|out, state, value| {
        use minijinja::value::ValueKind;
        match value.kind() {
            ValueKind::None => Ok(()),
            ValueKind::Bool | ValueKind::Seq | ValueKind::Map => {
                let j: Value = serde_json::to_value(value).unwrap_or(Value::Null);
                out.write_str(&crate::pycompat::py_str(&j))
                    .map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
            }
            _ => minijinja::escape_formatter(out, state, value),
        }
    });
    let ctx = JValue::from_serialize(vars);
    env.render_str(text, ctx).map_err(|e| {
        let mut msg = e.to_string();
        if e.kind() == ErrorKind::UndefinedError {
            msg = format!("{msg} (a variable the template uses is not in Task::vars)");
        }
        msg
    })
}

/// The Ansible filters templates commonly use, beside Jinja's builtins.
fn add_filters(env: &mut Environment<'_>) {
    env.add_filter("d", minijinja::filters::default);
    env.add_filter("to_json", |v: JValue| -> Result<String, minijinja::Error> {
        let j: Value = serde_json::to_value(&v)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(json_dumps(&j))
    });
    env.add_filter(
        "to_nice_json",
        |v: JValue| -> Result<String, minijinja::Error> {
            let j: Value = serde_json::to_value(&v)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            Ok(nice_json(&j, 0))
        },
    );
    env.add_filter("bool", |v: JValue| -> bool {
        match v.as_str() {
            Some(s) => matches!(
                s.to_lowercase().as_str(),
                "yes" | "on" | "1" | "true" | "t" | "y"
            ),
            None => v.is_true(),
        }
    });
    env.add_filter("basename", |s: String| -> String {
        s.rsplit('/').next().unwrap_or("").to_owned()
    });
    env.add_filter("dirname", |s: String| -> String {
        match s.rfind('/') {
            Some(0) => "/".into(),
            Some(i) => s[..i].to_owned(),
            None => String::new(),
        }
    });
    env.add_filter("quote", |s: String| crate::pycompat::shlex_quote(&s));
    env.add_filter("b64encode", |s: String| b64encode(s.as_bytes()));
    env.add_filter(
        "b64decode",
        |s: String| -> Result<String, minijinja::Error> {
            crate::pycompat::b64decode(&s)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, "bad base64"))
        },
    );
    env.add_filter(
        "mandatory",
        |v: JValue| -> Result<JValue, minijinja::Error> {
            if v.is_undefined() {
                Err(minijinja::Error::new(
                    ErrorKind::UndefinedError,
                    "Mandatory variable has not been overridden",
                ))
            } else {
                Ok(v)
            }
        },
    );
    env.add_filter(
        "ternary",
        |v: JValue, a: JValue, b: JValue| {
            if v.is_true() { a } else { b }
        },
    );
}

/// Python's `json.dumps(v, indent=4, sort_keys=True)` (to_nice_json).
fn nice_json(v: &Value, level: usize) -> String {
    let pad = |n: usize| " ".repeat(n * 4);
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}{}: {}",
                        pad(level + 1),
                        json_dumps(&Value::String((*k).clone())),
                        nice_json(&m[*k], level + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{}}}", items.join(",\n"), pad(level))
        }
        Value::Array(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|x| format!("{}{}", pad(level + 1), nice_json(x, level + 1)))
                .collect();
            format!("[\n{}\n{}]", items.join(",\n"), pad(level))
        }
        other => json_dumps(other),
    }
}

fn b64encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh `ansible-local-<pid><rand>` dir under `local_tmp` (ansible-core's
/// per-process `DEFAULT_LOCAL_TMP`, here one per action, removed after it).
pub(super) fn local_dir(local_tmp: &Path) -> Result<PathBuf, Error> {
    let dir = local_tmp.join(format!(
        "ansible-local-{}{}",
        std::process::id(),
        rand_name(8)
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&dir)
        .map_err(|e| Error::LocalFile {
            path: dir.clone(),
            source: e,
        })?;
    Ok(dir)
}

/// `n` random characters of `[a-z0-9_]`, as `tempfile` names use.
pub(super) fn rand_name(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut x = h.finish();
    (0..n)
        .map(|_| {
            let c = CH[(x % CH.len() as u64) as usize] as char;
            x = (x / CH.len() as u64) ^ x.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> String {
        let syntax = Syntax {
            block: ("{%".into(), "%}".into()),
            variable: ("{{".into(), "}}".into()),
            comment: ("{#".into(), "#}".into()),
        };
        let Value::Object(m) = v else { unreachable!() };
        render(t, &m, &syntax, true, false, &[]).unwrap()
    }

    #[test]
    fn jinja_semantics_and_filters() {
        assert_eq!(r("{% if a %}\nx\n{% endif %}\n", json!({"a": true})), "x\n");
        assert_eq!(r("{{ b | d('z') }}", json!({})), "z");
        assert_eq!(
            r("{{ a | to_json }}", json!({"a": {"k": [1, "2"]}})),
            r#"{"k": [1, "2"]}"#
        );
        assert_eq!(r("{{ 'yes' | bool }}", json!({})), "True");
        assert_eq!(
            r(
                "{{ n }} {{ l }} {{ m }}",
                json!({"n": null, "l": ["a", 1], "m": {"k": false}})
            ),
            " ['a', 1] {'k': False}"
        );
        assert_eq!(r("{{ '/a/b.txt' | basename }}", json!({})), "b.txt");
        assert_eq!(r("{{ 'hi' | b64encode }}", json!({})), "aGk=");
        assert_eq!(
            r("{{ a | to_nice_json }}", json!({"a": {"b": 1}})),
            "{\n    \"b\": 1\n}"
        );
        let syntax = Syntax {
            block: ("{%".into(), "%}".into()),
            variable: ("{{".into(), "}}".into()),
            comment: ("{#".into(), "#}".into()),
        };
        assert!(render("{{ nope }}", &Map::new(), &syntax, true, false, &[]).is_err());
    }
}
