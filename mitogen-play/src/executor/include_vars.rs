//! `include_vars`, as ansible-core's action plugin: one file (found as a
//! `vars/` source of the task), or a directory walked in name order to a
//! depth, filtered by `files_matching`, `ignore_files` and `extensions`;
//! the variables under `name` if given, merged into what the host has
//! with `hash_behaviour: merge`.

use super::controller::Call;
use super::outcome::{finish_outcome, raised_outcome};
use crate::events::Outcome;
use crate::inventory::read_text;
use crate::yaml;
use mitogen_ansible::Status;
use mitogen_ansible::pycompat::py_str;
use regex::Regex;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

const DIR_ARGS: &[&str] = &[
    "dir",
    "depth",
    "files_matching",
    "ignore_files",
    "extensions",
    "ignore_unknown_extensions",
];
const FILE_ARGS: &[&str] = &["file", "_raw_params"];
const ALL_ARGS: &[&str] = &["name", "hash_behaviour"];

/// What was read: the variables, the files, whether any was vaulted.
#[derive(Default)]
struct Loaded {
    vars: Map<String, Value>,
    files: Vec<String>,
    vaulted: bool,
}

pub(super) fn include_vars(c: &Call<'_>) -> Outcome {
    let Call {
        h,
        vars,
        args,
        no_log,
        ..
    } = *c;
    let empty = Map::new();
    let args = args.as_object().unwrap_or(&empty);
    let (mut dirs, mut files) = (0, 0);
    for k in args.keys() {
        if DIR_ARGS.contains(&k.as_str()) {
            dirs += 1;
        } else if FILE_ARGS.contains(&k.as_str()) {
            files += 1;
        } else if !ALL_ARGS.contains(&k.as_str()) {
            return raised_outcome(
                &format!("{k} is not a valid option in include_vars"),
                no_log,
                false,
            );
        }
    }
    if dirs > 0 && files > 0 {
        return raised_outcome(
            "You are mixing file only and dir only arguments, these are incompatible",
            no_log,
            false,
        );
    }
    let text = |k: &str| args.get(k).filter(|v| !v.is_null()).map(py_str);
    let mut loaded = Loaded::default();
    let outcome = match text("dir") {
        Some(dir) => from_dir(c, args, &dir, &mut loaded),
        None => {
            let file = text("file")
                .or_else(|| text("_raw_params").map(|f| f.trim_end_matches('\n').to_owned()));
            match file {
                Some(file) => match crate::lookup::find_needle(vars, "vars", &file) {
                    Ok(p) => load(Path::new(&p), false, &[], &mut loaded),
                    Err(tried) => Err(not_found(Some(&file), &tried)),
                },
                // `file: "{{ nothing found }}"`: a file that is `None`.
                None => {
                    vars.warn(
                        "Invalid request to find a file that matches a \"null\" value".into(),
                    );
                    Err(not_found(None, &[]))
                }
            }
        }
    };
    let mut results = loaded.vars;
    if let Some(n) = text("name") {
        let mut scope = Map::new();
        scope.insert(n, Value::Object(results));
        results = scope;
    }
    let mut m = Map::new();
    match outcome {
        Err(msg) => {
            m.insert("failed".into(), true.into());
            m.insert("message".into(), msg.into());
        }
        Ok(()) if text("hash_behaviour").as_deref() == Some("merge") => {
            for (k, v) in results.iter_mut() {
                if let Some(old) = vars.get(k) {
                    let mut merged = old.clone();
                    merge_hashes(&mut merged, std::mem::take(v));
                    *v = merged;
                }
            }
        }
        Ok(()) => {}
    }
    let failed = m.contains_key("failed");
    if !failed {
        // Variables at include_vars precedence, for the rest of the play.
        h.included.lock().extend(results.clone());
    }
    m.insert("ansible_included_var_files".into(), loaded.files.into());
    m.insert("ansible_facts".into(), Value::Object(results));
    m.insert("changed".into(), false.into());
    // What a vault held is not shown (`show_content`).
    let status = if failed { Status::Failed } else { Status::Ok };
    finish_outcome(status, m, no_log || loaded.vaulted)
}

/// `AnsibleFileNotFound`'s message.
fn not_found(file: Option<&str>, tried: &[String]) -> String {
    let searched: String = tried.iter().map(|p| format!("\n\t{p}")).collect();
    let what = match file {
        Some(f) => format!("Could not find or access '{f}'"),
        None => "Could not find file".to_owned(),
    };
    format!(
        "{what}{}{searched} on the Ansible Controller.\nIf you are using a module and expect the file to exist on the remote, see the remote_src option",
        if tried.is_empty() {
            ""
        } else {
            "\nSearched in:"
        }
    )
}

/// The `dir` form: `_set_root_dir`, `_traverse_dir_depth`,
/// `_load_files_in_dir`.
fn from_dir(
    c: &Call<'_>,
    args: &Map<String, Value>,
    dir: &str,
    out: &mut Loaded,
) -> Result<(), String> {
    let t = c.t;
    let root: PathBuf = match &t.role {
        Some(r) if dir.split('/').next() == Some("vars") => {
            let p = r.path.join(dir);
            if p.exists() { p } else { PathBuf::from(dir) }
        }
        Some(r) => r.path.join("vars").join(dir),
        None => t
            .loc
            .file
            .parent()
            .map_or_else(|| PathBuf::from(dir), |d| d.join(dir)),
    };
    let root = super::abs(&root);
    if !root.exists() {
        return Err(format!("{} directory does not exist", root.display()));
    }
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let depth = args
        .get("depth")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0);
    let matcher = match args
        .get("files_matching")
        .filter(|v| !v.is_null())
        .map(py_str)
    {
        Some(p) => Some(Regex::new(&p).map_err(|e| format!("Invalid regular expression: {e}"))?),
        None => None,
    };
    let ignore: Vec<String> = match args.get("ignore_files") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().map(py_str).collect(),
        Some(v) => return Err(format!("{} must be a list", py_str(v))),
    };
    // `_ignore_file`: each pattern matched at a name's end.
    let ignore: Vec<Regex> = ignore
        .iter()
        .map(|p| Regex::new(&format!("{p}$")))
        .collect::<Result<_, _>>()
        .map_err(|_| "Invalid regular expression".to_owned())?;
    let exts: Vec<String> = match args.get("extensions") {
        None | Some(Value::Null) => vec!["yaml".into(), "yml".into(), "json".into()],
        Some(Value::Array(a)) => a.iter().map(py_str).collect(),
        // Python's `list(str)`: its characters.
        Some(Value::String(s)) => s.chars().map(String::from).collect(),
        Some(_) => return Err("Invalid type for \"extensions\" option, it must be a list".into()),
    };
    let ignore_unknown = args
        .get("ignore_unknown_extensions")
        .is_some_and(super::bool_val);
    let role_main = t
        .role
        .as_ref()
        .map(|r| r.path.join("vars").join("main.yml"));
    let mut dirs = Vec::new();
    walk(&root, &mut dirs);
    dirs.sort();
    for d in dirs {
        let level = d.strip_prefix(&root).map_or(0, |r| r.components().count()) + 1;
        if depth != 0 && level as u64 > depth {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                (!e.path().is_dir()).then(|| e.file_name().into_string().ok())?
            })
            .collect();
        names.sort();
        for name in names {
            // A role's own vars/main.yml (ansible-core compares it joined
            // to the role's path, as written).
            if role_main.as_ref() == Some(&d.join(&name)) {
                continue;
            }
            if matcher.as_ref().is_some_and(|m| !m.is_match(&name)) {
                continue;
            }
            let ignored = ignore.iter().any(|r| r.is_match(&name));
            let path = d.join(&name);
            if ignored || !path.exists() || (ignore_unknown && !valid_ext(&name, &exts)) {
                continue;
            }
            load(&path, true, &exts, out)?;
        }
    }
    Ok(())
}

/// The directories under `dir` (itself first), following links.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && out.len() < 10_000 {
            walk(&p, out);
        }
    }
}

/// `_is_valid_file_ext`: Python's `splitext` (no extension is `''`,
/// which `extensions` may list).
fn valid_ext(name: &str, exts: &[String]) -> bool {
    let e = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    exts.iter().any(|x| x == e)
}

/// `_load_files`: one file's variables (a mapping, or nothing).
fn load(path: &Path, validate: bool, exts: &[String], out: &mut Loaded) -> Result<(), String> {
    let shown = path.display().to_string();
    if validate && !valid_ext(&shown, exts) {
        return Err(format!(
            "{shown} does not have a valid extension: {}",
            exts.join(", ")
        ));
    }
    let text = read_text(path).map_err(|e| e.to_string())?;
    out.vaulted |= mitogen_ansible::vault::is_encrypted_file(path);
    let n = yaml::parse_one(&text, path).map_err(|e| e.to_string())?;
    match n.to_json() {
        Value::Null => {}
        Value::Object(o) => out.vars.extend(o),
        _ => return Err(format!("{shown} must be stored as a dictionary/hash")),
    }
    out.files.push(shown);
    Ok(())
}

/// `combine_vars(merge=True)`: mappings merged key by key, anything else
/// replaced.
fn merge_hashes(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in y {
                match x.get_mut(&k) {
                    Some(old) => merge_hashes(old, v),
                    None => {
                        x.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}
