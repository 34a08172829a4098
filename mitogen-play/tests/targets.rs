//! ansible-core's own integration targets under both tools.
//!
//! ansible-core ships its integration suite in its sdist
//! (`test/integration/targets`, fetched once by `scripts/ansible-targets.sh`
//! for the venv's release). Most targets are roles; each selected one runs
//! as a role against `localhost` (local connection, gathered facts,
//! `output_dir` set, `roles_path` the targets dir), first under
//! `ansible-playbook` and then under `mitogen-play`, each with a fresh
//! `output_dir`, and the two are compared by `PLAY RECAP` and by every
//! task's result (the play suite's comparison: volatile fields aside).
//!
//! A target whose `ansible-playbook` run fails on this machine (a failed or
//! unreachable host in its recap: it needs something this machine lacks)
//! is not applicable: it is reported with the reason and never counted as
//! a match. The suite prints `N of M applicable targets match`; the targets
//! in [`MATCHING`] must match (a regression fails the suite), the others
//! are reported with their first difference.
//!
//! `TARGETS_ONLY=<substring>` runs the targets whose names hold it;
//! `TARGETS_LOGS=1` prints both tools' output for a target that differs.

use mitogen_test_support::ansible::{capture_callback_dir, venv_python, workspace};
use mitogen_test_support::compare::{
    FILE_VOLATILE, Results, VOLATILE, compare_results, env_cmd, read_results,
};
use mitogen_test_support::{skip_unless_ci, tests};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The targets tried: role-shaped ones that apply to a Linux controller
/// running as root, and that leave the machine as they found it.
const TARGETS: &[&str] = &[
    "add_host",
    "assemble",
    "assert",
    "async",
    "async_fail",
    "binary",
    "blockinfile",
    "changed_when",
    "command_shell",
    "common_network",
    "copy",
    "dict_transformations",
    "display-newline",
    "failed_when",
    "file",
    "filter_encryption",
    "filter_urls",
    "filter_urlsplit",
    "find",
    "getent",
    "ignore_errors",
    "include_import_tasks_nested",
    "include_parent_role_vars",
    "include_vars",
    "include_import_tasks_nested",
    "include_with_templating",
    "jinja_plugins",
    "lineinfile",
    "lookup-option-name",
    "lookup_csvfile",
    "lookup_dict",
    "lookup_file",
    "lookup_first_found",
    "lookup_indexed_items",
    "lookup_items",
    "lookup_lines",
    "lookup_list",
    "lookup_nested",
    "lookup_together",
    "lookup_password",
    "lookup_pipe",
    "lookup_random_choice",
    "lookup_sequence",
    "lookup_subelements",
    "lookup_template",
    "lookup_together",
    "lookup_varnames",
    "lookup_vars",
    "loop-until",
    "loops",
    "module_defaults",
    "module_no_log",
    "old_style_modules_posix",
    "ping",
    "raw",
    "replace",
    "script",
    "shell",
    "slurp",
    "special_vars",
    "split",
    "stat",
    "task-args",
    "task-esoterica",
    "task_ordering",
    "tempfile",
    "template",
    "templating",
    "test_files",
    "test_mathstuff",
    "undefined",
    "unarchive",
    "until",
    "var_inheritance",
    "var_reserved",
    "wait_for",
    "want_json_modules_posix",
    "yaml_parsing",
];

/// Result fields that differ between any two runs of a target, by
/// target, with why.
const TARGET_VOLATILE: &[(&str, &[&str])] = &[
    // It lists /tmp, where each run's temp dirs are.
    ("changed_when", &["stdout", "stdout_lines"]),
    // How long it waited.
    ("wait_for", &["elapsed"]),
];

/// Targets that match today (recap and every result): one that stops
/// matching fails the suite. (`async_fail` and `wait_for` match too, but
/// their results depend on timing, so they are reported, not guarded.)
const MATCHING: &[&str] = &[
    "add_host",
    "assemble",
    "blockinfile",
    "changed_when",
    "common_network",
    "dict_transformations",
    "display-newline",
    "filter_urls",
    "filter_urlsplit",
    "getent",
    "ignore_errors",
    "include_with_templating",
    "lookup-option-name",
    "lookup_dict",
    "lookup_file",
    "lookup_indexed_items",
    "lookup_lines",
    "lookup_list",
    "lookup_nested",
    "old_style_modules_posix",
    "ping",
    "raw",
    "replace",
    "stat",
    "task_ordering",
    "undefined",
    "var_inheritance",
    "want_json_modules_posix",
];

fn main() {
    mitogen_test_support::run(tests![integration_targets]);
}

/// The targets directory for the venv's ansible-core, or `None` after
/// `skip()` (a panic under `CI=true`).
fn targets_dir(py: &Path) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("MITOGEN_ANSIBLE_TARGETS") {
        return Some(PathBuf::from(d));
    }
    let out = Command::new(py)
        .args([
            "-c",
            "import ansible.release; print(ansible.release.__version__)",
        ])
        .output()
        .ok()?;
    let ver = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = workspace().join("target/ansible-targets").join(&ver);
    if dir.join(".ok").exists() {
        return Some(dir.join("targets"));
    }
    let why = format!(
        "no integration targets for ansible-core {ver} at {}: run `scripts/ansible-targets.sh` first",
        dir.display()
    );
    skip_unless_ci(&why);
    None
}

/// One tool's run of one target.
struct Run {
    results: Results,
    recap: Option<String>,
    log: String,
}

impl Run {
    /// Why the run says the target does not apply here (a failed or
    /// unreachable host), or `None`.
    fn failure(&self) -> Option<String> {
        let Some(recap) = &self.recap else {
            let last = self.log.lines().rev().find(|l| !l.trim().is_empty());
            return Some(format!("no recap ({})", last.unwrap_or("no output")));
        };
        let bad = |k: &str| {
            recap
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .is_some_and(|n| n != "0")
        };
        if !bad("failed=") && !bad("unreachable=") {
            return None;
        }
        let first = self
            .log
            .lines()
            .find(|l| l.starts_with("[ERROR]") || l.starts_with("fatal:"))
            .unwrap_or("");
        Some(format!(
            "{recap}; {}",
            first.chars().take(200).collect::<String>()
        ))
    }
}

/// The `PLAY RECAP` line of `out`, its spaces squeezed.
fn recap(out: &str) -> Option<String> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("PLAY RECAP"));
    lines.next()?;
    let l = lines.next()?;
    Some(l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Writes the play, config and inventory that run `target` as a role.
fn prepare(dir: &Path, targets: &Path, target: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("output")).unwrap();
    std::fs::create_dir_all(dir.join("local-tmp")).unwrap();
    std::fs::write(
        dir.join("ansible.cfg"),
        format!("[defaults]\nroles_path = {}\n", targets.display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("inventory"),
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
    )
    .unwrap();
    let play = dir.join("play.yml");
    std::fs::write(
        &play,
        format!(
            "- hosts: localhost\n  gather_facts: true\n  vars:\n    output_dir: {}\n  roles:\n    - {target}\n",
            dir.join("output").display()
        ),
    )
    .unwrap();
    play
}

/// Runs one tool (`ours`: mitogen-play, else ansible-playbook) on the
/// target prepared in `dir`, with a time limit.
fn run(py: &Path, dir: &Path, play: &Path, ours: bool) -> Run {
    let bin = py.parent().unwrap();
    let json = dir.join(if ours { "ours.jsonl" } else { "ansible.jsonl" });
    let _ = std::fs::remove_file(&json);
    // A fresh output_dir for each tool.
    let _ = std::fs::remove_dir_all(dir.join("output"));
    std::fs::create_dir_all(dir.join("output")).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("600");
    env_cmd(&mut cmd, dir, bin);
    if ours {
        cmd.arg(env!("CARGO_BIN_EXE_mitogen-play"))
            .arg("--ansible-python")
            .arg(py)
            .arg("--json")
            .arg(&json);
    } else {
        cmd.arg(bin.join("ansible-playbook"))
            .env("ANSIBLE_CALLBACK_PLUGINS", capture_callback_dir())
            .env("ANSIBLE_CALLBACKS_ENABLED", "capture")
            .env("CAPTURE_FILE", &json);
    }
    cmd.env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .arg("-i")
        .arg(dir.join("inventory"))
        .arg(play);
    let out = cmd.output().expect("run a tool");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        results: read_results(&json),
        recap: recap(&String::from_utf8_lossy(&out.stdout)),
        log,
    }
}

fn integration_targets() {
    let Some(py) = venv_python() else {
        return;
    };
    let Some(targets) = targets_dir(&py) else {
        return;
    };
    let only = std::env::var("TARGETS_ONLY").unwrap_or_default();
    let logs = std::env::var_os("TARGETS_LOGS").is_some();
    let scratch = std::env::temp_dir().join(format!("mtg-targets-{}", std::process::id()));
    let (mut applicable, mut matching) = (0, 0);
    let mut regressed = Vec::new();
    for &t in TARGETS.iter().filter(|t| t.contains(only.as_str())) {
        if !targets.join(t).join("tasks").is_dir() {
            eprintln!("  n/a       {t}: not in this release's targets");
            continue;
        }
        let dir = scratch.join(t);
        let play = prepare(&dir, &targets, t);
        let theirs = run(&py, &dir, &play, false);
        if let Some(why) = theirs.failure() {
            eprintln!("  n/a       {t}: ansible-playbook fails here: {why}");
            continue;
        }
        applicable += 1;
        let ours = run(&py, &dir, &play, true);
        let mut d = Vec::new();
        if ours.recap != theirs.recap {
            d.push(format!(
                "recap: ours {:?} != ansible {:?}",
                ours.recap, theirs.recap
            ));
        }
        let own = TARGET_VOLATILE
            .iter()
            .filter(|(n, _)| *n == t)
            .flat_map(|(_, v)| v.iter());
        let volatile: Vec<&str> = VOLATILE
            .iter()
            .chain(FILE_VOLATILE)
            .chain(own)
            .copied()
            .collect();
        d.extend(compare_results(&ours.results, &theirs.results, &volatile));
        if d.is_empty() {
            matching += 1;
            eprintln!("  match     {t} ({} results)", theirs.results.len());
        } else {
            let first = ours
                .log
                .lines()
                .find(|l| l.starts_with("ERROR!") || l.starts_with("[ERROR]"))
                .unwrap_or("");
            eprintln!(
                "  differs   {t}: {} difference(s); {}\n            our first error: {first}",
                d.len(),
                d[0].chars().take(300).collect::<String>()
            );
            if logs {
                eprintln!("--- differences:\n{}", d.join("\n"));
                eprintln!("--- ours:\n{}\n--- ansible:\n{}", ours.log, theirs.log);
            }
            if MATCHING.contains(&t) {
                regressed.push(t);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("integration targets: {matching} of {applicable} applicable targets match");
    assert!(
        regressed.is_empty(),
        "integration targets that matched no longer do: {regressed:?}"
    );
}
