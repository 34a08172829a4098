//! Comparing two runs of one playbook, under `ansible-playbook` (with the
//! capture callback) and under `mitogen-play` (`--json`): results keyed by
//! host, task and occurrence, compared field by field but for what is
//! volatile (times, temp names, job ids). Shared by mitogen-play's `play`
//! suite and its `targets` suite over ansible-core's integration targets.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// As in mitogen-ansible's `tests/conformance.rs`, and `atime`: the first
/// read of a file in a day moves it (relatime), so a file both tools stat
/// and then checksum (`/etc/hostname` on a fresh machine) has another
/// atime for the second.
pub const VOLATILE: &[&str] = &["start", "end", "delta", "atime"];

/// `(host, task, n-th occurrence) -> (status, result)`.
pub type Results = BTreeMap<(String, String, usize), (String, Value)>;

/// The results a capture file or `--json` file holds.
pub fn read_results(path: &Path) -> Results {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut out = Results::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let host = v["host"].as_str().unwrap_or("").to_owned();
        let task = v["task"].as_str().unwrap_or("").to_owned();
        let n = seen.entry((host.clone(), task.clone())).or_default();
        *n += 1;
        out.insert(
            (host, task, *n),
            (
                v["status"].as_str().unwrap_or("").to_owned(),
                v["result"].clone(),
            ),
        );
    }
    out
}

/// A clean environment for either tool: the venv first on `PATH`, the
/// account's home, a UTF-8 locale, temp and control dirs in `scratch`.
pub fn env_cmd(cmd: &mut Command, scratch: &Path, venv_bin: &Path) {
    cmd.env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        // The user's own home: a HOME that is not the account's makes the
        // local connection's `~` (the account's) and the job's disagree,
        // and every local async job "could not be found", in both runners.
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| scratch.join("home").into()),
        )
        .env("LANG", "C.UTF-8")
        .env("ANSIBLE_LOCAL_TEMP", scratch.join("local-tmp"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", scratch.join("cp"))
        .current_dir(scratch);
}

/// What else differs between two runs of a target that makes and
/// inspects files: a file's times and inode.
pub const FILE_VOLATILE: &[&str] = &["mtime", "ctime", "inode"];

/// Whether two strings differ only in what is volatile, like times: async
/// job ids (`j<digits>.<digits>`: a random number and the wrapper's pid),
/// remote temp dir names (`ansible-tmp-<time>-<pid>-<random>`), the
/// `tempfile` module's names (`ansible.<8 random>`), and the random temp
/// name `copy content=` reports as `_original_basename`.
fn volatile_only(path: &str, a: &str, b: &str) -> bool {
    fn mask(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if let Some(t) = rest.strip_prefix("/ansible.") {
                let n = t
                    .char_indices()
                    .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
                    .count();
                if n == 8 {
                    out.push_str("/ansible.#");
                    rest = &t[8..];
                    continue;
                }
            }
            if let Some(t) = rest.strip_prefix("ansible-tmp-") {
                let n = t
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                    .unwrap_or(t.len());
                out.push_str("ansible-tmp-#");
                rest = &t[n..];
                continue;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            if c == 'j' && rest.starts_with(|c: char| c.is_ascii_digit()) {
                let n = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(rest.len());
                out.push('#');
                rest = &rest[n..];
            }
        }
        out
    }
    if path.ends_with("._original_basename") && a.starts_with('.') && b.starts_with('.') {
        return true;
    }
    mask(a) == mask(b)
}

/// Facts differ between any two gathers (time, uptime, memory): compare
/// that facts came back, and a few stable ones.
fn facts_view(v: &Value) -> Value {
    let f = &v["ansible_facts"];
    serde_json::json!({
        "has_facts": f.as_object().is_some_and(|o| o.len() > 20),
        "system": f["ansible_system"],
        "user_id": f["ansible_user_id"],
        "python": f["discovered_interpreter_python"],
    })
}

/// Every difference between two runs' results (status, fields, results
/// only one of them has).
/// `volatile`: the keys skipped at every level ([`VOLATILE`], and more).
pub fn compare_results(ours: &Results, theirs: &Results, volatile: &[&str]) -> Vec<String> {
    let diff = |path: &str, o: &Value, t: &Value, out: &mut Vec<String>| {
        crate::ansible::diff_values(path, o, t, volatile, &volatile_only, out);
    };
    let mut d = Vec::new();
    for (k, (ts, tv)) in theirs {
        let Some((os, ov)) = ours.get(k) else {
            d.push(format!("{k:?}: only ansible ({ts})"));
            continue;
        };
        if os != ts {
            d.push(format!("{k:?}: status ours {os} != ansible {ts}"));
        }
        if k.1 == "Gathering Facts" {
            diff(
                &format!("{}/{}", k.0, k.1),
                &facts_view(ov),
                &facts_view(tv),
                &mut d,
            );
        } else {
            diff(&format!("{}/{}#{}", k.0, k.1, k.2), ov, tv, &mut d);
        }
    }
    for k in ours.keys() {
        if !theirs.contains_key(k) {
            d.push(format!("{k:?}: only ours"));
        }
    }
    d
}
