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
/// inspects files: a file's times, inode and generation (`stat`'s
/// `version`).
pub const FILE_VOLATILE: &[&str] = &["mtime", "ctime", "inode", "version"];

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
            // The controller's temp files: `ansible-local-<pid><random>`
            // and Python's `tmp<random>` inside it.
            if let Some(t) = rest.strip_prefix("ansible-local-") {
                let n = t
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(t.len());
                out.push_str("ansible-local-#");
                rest = &t[n..];
                if let Some(t) = rest.strip_prefix("/tmp") {
                    let n = t
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(t.len());
                    out.push_str("/tmp#");
                    rest = &t[n..];
                }
                continue;
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
    let (a, b) = (mask(a), mask(b));
    a == b || random_names_only(&a, &b) || backups_only(&a, &b)
}

/// Python's `tempfile` names: the strings differ only inside runs of
/// eight name characters (`tmpXXXXXXXX`, `prefix.XXXXXXXX.suffix`)
/// between separators, in most of their places.
fn random_names_only(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        // The run of name characters around the first difference.
        let start = (0..i).rev().find(|&j| !name(a[j])).map_or(0, |j| j + 1);
        let end = (i..a.len())
            .find(|&j| !name(a[j]) || !name(b[j]))
            .unwrap_or(a.len());
        let (ra, rb) = (&a[start..end], &b[start..end]);
        let (ra, rb) = match (ra.strip_prefix(b"tmp"), rb.strip_prefix(b"tmp")) {
            (Some(x), Some(y)) if ra.len() == 11 => (x, y),
            _ => (ra, rb),
        };
        // Eight random characters differ almost everywhere; a real
        // difference (`hostname`, `hostnamf`) in a place or two.
        let differing = ra.iter().zip(rb).filter(|(x, y)| x != y).count();
        if ra.len() != 8 || differing < 5 || rb.iter().any(|&c| !name(c)) {
            return false;
        }
        i = end;
    }
    true
}

/// Backup file names (`file.<pid>.<YYYY-MM-DD@HH:MM:SS>~`, as a module's
/// `backup` makes them) are the only difference.
fn backups_only(a: &str, b: &str) -> bool {
    fn mask(s: &str) -> String {
        let mut out = String::new();
        for part in s.split('~') {
            // `<pid>.<date>@<time>` at the end of this part.
            let cut = part.rfind('@').and_then(|at| {
                let head = &part[..at];
                let date_at = head.rfind('.')?;
                let pid_at = head[..date_at].rfind('.')?;
                head[pid_at + 1..date_at]
                    .chars()
                    .all(|c| c.is_ascii_digit())
                    .then_some(pid_at)
            });
            match cut {
                Some(c) => out.push_str(&part[..c]),
                None => out.push_str(part),
            }
            out.push('~');
        }
        out
    }
    a.contains('~') && mask(a) == mask(b)
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
        // Gathered facts (also a `setup` task's): what a gather returns.
        if k.1 == "Gathering Facts" || tv["ansible_facts"].get("ansible_date_time").is_some() {
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

#[cfg(test)]
mod tests {
    use super::volatile_only;

    #[test]
    fn random_names_and_backups_are_volatile() {
        let same = |a, b| volatile_only("x", a, b);
        assert!(same("/tmp/tmpg051ejfa", "/tmp/tmpq8x0z1ab"));
        assert!(same(
            "/tmp/ansible.k6bnfbzc.test/hello.vhorbalm.goodbye",
            "/tmp/ansible.twk5qog1.test/hello.gjdk274x.goodbye"
        ));
        assert!(same(
            "/d/pangrams.06.txt.5945.2026-12-08@04:42:13~",
            "/d/pangrams.06.txt.871.2026-12-08@04:41:02~"
        ));
        assert!(!same("/tmp/tmpg051ejfa", "/tmp/tmpg051ejfa/x"));
        assert!(!same("/etc/hostname", "/etc/hostnamf"));
        assert!(!same(
            "/d/a.txt.5945.2026-12-08@04:42:13~",
            "/d/b.txt.5945.2026-12-08@04:42:13~"
        ));
    }
}
