//! What the Ansible test binaries (mitogen-ansible's `conformance`,
//! mitogen-play's `play`) share: the ansible-core venv and the capture
//! callback plugin.

use crate::skip;
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
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    skip(&why);
    None
}

/// The directory of the `capture` callback plugin, which writes each task
/// result ansible-playbook reports to `$CAPTURE_FILE` as JSON lines (for
/// `ANSIBLE_CALLBACK_PLUGINS`).
pub fn capture_callback_dir() -> PathBuf {
    workspace().join("mitogen-ansible/tests/fixtures/callback_plugins")
}
