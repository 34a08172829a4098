//! What the Ansible test binaries (mitogen-ansible's `conformance`,
//! mitogen-play's `play`) share: the ansible-core venv and the capture
//! callback plugin.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The venv's python (`$MITOGEN_ANSIBLE_VENV`, else `target/ansible-venv`,
/// as `scripts/ansible-venv.sh` makes it), or `None` after `skip()`; a
/// panic under `CI=true`.
pub fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("MITOGEN_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/ansible-venv"));
    let py = venv.join("bin/python");
    if py.exists() && venv.join("bin/ansible-playbook").exists() {
        return Some(py);
    }
    let why = format!(
        "no ansible-core venv at {}: run `scripts/ansible-venv.sh` first",
        venv.display()
    );
    crate::skip_unless_ci(&why);
    None
}

/// The directory of the `capture` callback plugin, which writes each task
/// result ansible-playbook reports to `$CAPTURE_FILE` as JSON lines (for
/// `ANSIBLE_CALLBACK_PLUGINS`).
pub fn capture_callback_dir() -> PathBuf {
    workspace().join("mitogen-ansible/tests/fixtures/callback_plugins")
}

/// Field-by-field differences between our result and ansible-core's, as
/// lines `path: ours X != ansible Y` (and `only ours`/`only ansible`):
/// keys in `volatile` are skipped at every level, and two strings that
/// `same_str(path, ours, theirs)` accepts count as equal.
pub fn diff_values(
    path: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
    volatile: &[&str],
    same_str: &dyn Fn(&str, &str, &str) -> bool,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                if volatile.contains(&k.as_str()) {
                    continue;
                }
                match b.get(k) {
                    Some(vb) => {
                        diff_values(&format!("{path}.{k}"), va, vb, volatile, same_str, out)
                    }
                    None => out.push(format!("{path}.{k}: only ours: {va}")),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) && !volatile.contains(&k.as_str()) {
                    out.push(format!("{path}.{k}: only ansible: {vb}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, volatile, same_str, out);
            }
        }
        (a, b) if a == b => {}
        (Value::String(a), Value::String(b)) if same_str(path, a, b) => {}
        (a, b) => out.push(format!("{path}: ours {a} != ansible {b}")),
    }
}
