//! Play conformance: real `ansible-playbook` (ansible-core 2.19 from the
//! venv, with the capture callback of `tests/fixtures`) and `mitogen-play`
//! run the same playbooks on the same inventories and targets; the
//! callback-level results are compared per task and host, ignoring only
//! the volatile fields of the runner's conformance suite.
//!
//! A case that needs a runner action the runner refuses (copy, template,
//! async) fails: those actions exist, and a regression must not pass. Without the venv or the sshd test hosts the
//! cases skip loudly; under `CI=true` they fail.

use mitogen_ansible::{ModuleSource, Runner, Task};
use mitogen_core::{Local, Registry, Router, RouterOptions};
use mitogen_test_support::sshd::{Sshd, sshd_available};

use mitogen_test_support::ansible::venv_python;
use mitogen_test_support::compare::{Results, VOLATILE, compare_results, env_cmd, read_results};
use mitogen_test_support::{skip, tests};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn register(reg: &mut Registry) {
    mitogen_ssh::register(reg);
    mitogen_ansible::register(reg);
}

fn main() {
    mitogen_core::agent_main(register);
    mitogen_test_support::run(tests![
        playbooks_local,
        playbooks_ssh,
        become_ssh,
        bad_input_is_refused_before_running,
        vault_failures_say_what_ansible_says,
        prompted_passwords_and_command_line_defaults,
        listings_match_ansible_playbook,
        connection_keywords_ssh,
        interrupted_run_ends_like_ansible_playbook,
        plugin_host_failures_are_clear,
        stdout_matches_ansible_playbook,
        version_says_what_it_runs_with,
    ]);
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/play-fixtures")
}

fn need_sshd() -> bool {
    if sshd_available() {
        return true;
    }
    let why = "no sshd/test users: as root run `scripts/test-hosts.sh setup`";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    skip(why);
    false
}

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mtg-play-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `args` with `{fixtures}` standing for the fixtures directory.
fn case_args(c: &Case) -> Vec<String> {
    let dir = fixtures().display().to_string();
    c.args
        .iter()
        .map(|a| a.replace("{fixtures}", &dir))
        .collect()
}

/// One playbook run both ways.
struct Case {
    playbook: &'static str,
    args: &'static [&'static str],
    /// Runner actions it needs; missing ones make it pending.
    needs: &'static [&'static str],
    /// Extra inventory lines.
    extra_inventory: &'static str,
    /// Environment for both tools (`{fixtures}` as in `args`).
    env: &'static [(&'static str, &'static str)],
}

impl Case {
    /// The playbook's file name (a case may name an absolute path).
    fn file_name(&self) -> &str {
        Path::new(self.playbook)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(self.playbook)
    }
}

const fn case(playbook: &'static str) -> Case {
    Case {
        playbook,
        args: &[],
        needs: &[],
        extra_inventory: "",
        env: &[],
    }
}

/// `c.env` with `{fixtures}` replaced, for a command.
fn case_env(c: &Case, cmd: &mut Command) {
    let dir = fixtures().display().to_string();
    for (k, v) in c.env {
        cmd.env(k, v.replace("{fixtures}", &dir));
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("01_basics.yml"),
        case("02_loops.yml"),
        case("03_linear_fail.yml"),
        case("04_free.yml"),
        case("05_handlers.yml"),
        case("06_blocks.yml"),
        Case {
            args: &["-C", "-D"],
            ..case("07_check_diff.yml")
        },
        case("08_roles.yml"),
        Case {
            needs: &["async_status"],
            ..case("09_async.yml")
        },
        Case {
            needs: &["copy", "template"],
            ..case("10_copy_template.yml")
        },
        Case {
            extra_inventory: "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
            ..case("11_delegate_once.yml")
        },
        case("12_gather.yml"),
        Case {
            args: &["--tags", "a"],
            ..case("13_tags.yml")
        },
        case("15_lookups.yml"),
        Case {
            extra_inventory: "[targets:vars]\nhv_color=blue\nhv_tpl=\"{{ inventory_hostname }}-tpl\"\n[special]\nh2 hv_color=red hv_own=h2only\n",
            needs: &["copy", "template"],
            ..case("16_hostvars.yml")
        },
        Case {
            extra_inventory: "[colored]\nh1 tu_color=red\nh2 tu_color=blue\nh3 tu_color=green\n",
            needs: &["copy", "template"],
            ..case("18_templates_undefined.yml")
        },
        Case {
            args: &[
                "--vault-id",
                "{fixtures}/vault/pass.txt",
                "--vault-id",
                "prod@{fixtures}/vault/prod-pass.txt",
            ],
            needs: &["copy"],
            ..case("17_vault.yml")
        },
        case("19_package_service.yml"),
        case("20_delegate_facts_order_throttle.yml"),
        case("21_module_defaults.yml"),
        Case {
            env: &[("ANSIBLE_COLLECTIONS_PATH", "{fixtures}/collections")],
            ..case("22_collections.yml")
        },
        case("23_written_as_run.yml"),
        case("24_context.yml"),
        Case {
            env: &[("ANSIBLE_HOME", "{fixtures}/ansible-home")],
            ..case("25_default_collections.yml")
        },
        case("26_all_failed.yml"),
        case("27_found_by_targets.yml"),
        case("28_vault_undecryptable.yml"),
        Case {
            args: &["-e@{fixtures}/vars/common.yml", "-eextra_one=1", "-f5"],
            ..case("29_cli_forms.yml")
        },
        Case {
            env: &[("ANSIBLE_COLLECTIONS_PATH", "{fixtures}/collections")],
            needs: &["template"],
            ..case("30_python_plugins.yml")
        },
        case("31_builtin_plugins.yml"),
        Case {
            env: &[("ANSIBLE_COLLECTIONS_PATH", "{fixtures}/collections")],
            ..case("32_collection_roles.yml")
        },
        case("33_template_errors_at_run.yml"),
        case("34_inventory_actions.yml"),
        case("35_results_are_not_templates.yml"),
        // --start-at-task: by a role task's full name; by a glob inside a
        // block (whose rescue and always still run); in a later play (the
        // first does not run at all, the second gathers facts first).
        Case {
            args: &["--start-at-task", "web : configure"],
            ..case("08_roles.yml")
        },
        Case {
            args: &["--start-at-task", "fails*"],
            ..case("06_blocks.yml")
        },
        Case {
            args: &["--start-at-task", "service, service_mgr known"],
            ..case("19_package_service.yml")
        },
        // Without the `prod` secret: the inline value fails where it is
        // used, the vars file still decrypts.
        Case {
            args: &["--vault-password-file", "{fixtures}/vault/pass.txt"],
            ..case("17_vault.yml")
        },
    ]
}

fn run_ansible(py: &Path, scratch: &Path, inv: &Path, c: &Case) -> (Results, String) {
    let bin = py.parent().unwrap();
    let capture = scratch.join(format!("ansible-{}.jsonl", c.file_name()));
    let _ = std::fs::remove_file(&capture);
    let mut cmd = Command::new(bin.join("ansible-playbook"));
    env_cmd(&mut cmd, scratch, bin);
    case_env(c, &mut cmd);
    cmd.arg("-i")
        .arg(inv)
        .arg(fixtures().join(c.playbook))
        .args(case_args(c))
        .env(
            "ANSIBLE_CALLBACK_PLUGINS",
            mitogen_test_support::ansible::capture_callback_dir(),
        )
        .env("ANSIBLE_CALLBACKS_ENABLED", "capture")
        .env("CAPTURE_FILE", &capture);
    let out = cmd.output().expect("ansible-playbook");
    (
        read_results(&capture),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn run_ours(py: &Path, scratch: &Path, inv: &Path, c: &Case) -> (Results, String, Option<i32>) {
    let bin = py.parent().unwrap();
    let json = scratch.join(format!("ours-{}.jsonl", c.file_name()));
    let _ = std::fs::remove_file(&json);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mitogen-play"));
    env_cmd(&mut cmd, scratch, bin);
    case_env(c, &mut cmd);
    cmd.arg("-i")
        .arg(inv)
        .arg(fixtures().join(c.playbook))
        .args(case_args(c))
        .arg("--json")
        .arg(&json)
        .arg("--ansible-python")
        .arg(py);
    if let Some(x) = std::env::var_os("PLAY_OURS_ARGS") {
        cmd.args(x.to_string_lossy().split_whitespace());
    }
    let out = cmd.output().expect("mitogen-play");
    (
        read_results(&json),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        out.status.code(),
    )
}

/// Runs every case against `inventory`; returns the mismatching ones.
fn compare_all(label: &str, inventory: &str, cases: &[Case]) -> Vec<String> {
    let Some(py) = venv_python() else {
        return Vec::new();
    };
    let scratch = Scratch::new(label);
    std::fs::create_dir_all(scratch.0.join("home")).unwrap();
    let missing = missing_actions(&py);
    let mut bad = Vec::new();
    for c in cases {
        let pending: Vec<&str> = c
            .needs
            .iter()
            .copied()
            .filter(|a| missing.contains(&a.to_string()))
            .collect();
        if !pending.is_empty() {
            // Every action the cases need exists: one that regresses to
            // UnsupportedAction fails the suite, it does not skip.
            eprintln!(
                "  MISSING   {label}/{}: the runner refuses {}",
                c.playbook,
                pending.join("/")
            );
            bad.push(format!("{label}/{}", c.playbook));
            continue;
        }
        let inv = scratch
            .0
            .join(format!("inv-{}", c.file_name().trim_end_matches(".yml")));
        std::fs::write(&inv, format!("{inventory}{}", c.extra_inventory)).unwrap();
        let (theirs, their_log) = run_ansible(&py, &scratch.0, &inv, c);
        let (ours, our_log, code) = run_ours(&py, &scratch.0, &inv, c);
        let mut d = compare_results(&ours, &theirs, VOLATILE);
        if theirs.is_empty() {
            d.push(format!(
                "ansible-playbook produced no results:\n{their_log}"
            ));
        }
        if d.is_empty() {
            eprintln!(
                "  match     {label}/{} ({} results, exit {code:?})",
                c.playbook,
                theirs.len()
            );
            if std::env::var_os("PLAY_TEST_LOGS").is_some_and(|v| v == "all") {
                eprintln!("--- ours:\n{our_log}\n--- ansible:\n{their_log}");
            }
        } else {
            eprintln!(
                "  MISMATCH  {label}/{}:\n      {}",
                c.playbook,
                d.join("\n      ")
            );
            if std::env::var_os("PLAY_TEST_LOGS").is_some() {
                eprintln!("--- ours:\n{our_log}\n--- ansible:\n{their_log}");
            }
            bad.push(format!("{label}/{}", c.playbook));
        }
    }
    bad
}

/// Runner actions the cases need that the runner refuses today.
fn missing_actions(py: &Path) -> Vec<String> {
    let r = Router::new(RouterOptions::new(), Registry::new(register)).expect("router");
    let ctx = r.connect(&Local::new()).expect("local context");
    let runner = Runner::new(ModuleSource::from_ansible_core(py).expect("ansible-core"));
    let mut out = Vec::new();
    for a in ["copy", "template", "async_status", "fetch", "script"] {
        if let Err(mitogen_ansible::Error::UnsupportedAction(_)) = runner.run(&ctx, &Task::new(a)) {
            out.push(a.to_owned());
        }
    }
    out
}

const LOCAL3: &str = "[targets]\nh1 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\nh2 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\nh3 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n";

fn playbooks_local() {
    let only = std::env::var("PLAY_TEST_ONLY").unwrap_or_default();
    let cs: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.is_empty() || c.playbook.contains(only.as_str()))
        .collect();
    let bad = compare_all("local", LOCAL3, &cs);
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

fn ssh_line(name: &str, sshd: &Sshd, user: &str, extra: &str) -> String {
    format!(
        "{name} ansible_host={} ansible_port={} ansible_user={user} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' {extra}\n",
        sshd.host(),
        sshd.port(),
        sshd.client_key().display(),
        sshd.known_hosts().display()
    )
}

fn playbooks_ssh() {
    if venv_python().is_none() || !need_sshd() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let inv = format!(
        "[targets]\n{}{}{}",
        ssh_line("h1", &sshd, "mtg-key", ""),
        ssh_line("h2", &sshd, "mtg-key", ""),
        ssh_line("h3", &sshd, "mtg-key", "")
    );
    let only = std::env::var("PLAY_TEST_ONLY").unwrap_or_default();
    let cs: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.is_empty() || c.playbook.contains(only.as_str()))
        .collect();
    let bad = compare_all("ssh", &inv, &cs);
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

fn become_ssh() {
    if venv_python().is_none() || !need_sshd() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let inv = format!("[targets]\n{}", ssh_line("h1", &sshd, "mtg-sudo", ""));
    let bad = compare_all("become", &inv, &[case("14_become.yml")]);
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

/// Unknown keywords, filters and modules, and malformed YAML, are errors
/// with file:line before any task runs (exit 4, no result written).
fn bad_input_is_refused_before_running() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("bad");
    let inv = scratch.0.join("inv");
    std::fs::write(&inv, "localhost ansible_connection=local\n").unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "- hosts: all\n  tasks:\n    - name: t\n      command: echo hi\n      bogus_kw: 1\n",
            ":5: conflicting action statements: command, bogus_kw",
        ),
        (
            "- hosts: all\n  tasks:\n    - no_such_module_mtg: {}\n",
            "couldn't resolve module/action 'no_such_module_mtg'",
        ),
        (
            "- hosts: all\n  tasks:\n    - debug: [\n",
            "YAML syntax error",
        ),
        (
            "- hosts: all\n  tasks:\n    - command: echo\n      with_frobnicate: [[1]]\n",
            ":4: unsupported loop 'with_frobnicate'",
        ),
        (
            "- hosts: all\n  module_defaults:\n    group/aws: {region: x}\n  tasks:\n    - command: echo\n",
            ":2: unsupported module_defaults group 'group/aws'",
        ),
        (
            "- hosts: all\n  order: upside_down\n  tasks:\n    - command: echo\n",
            "'upside_down' is not a valid host order",
        ),
        (
            "- hosts: all\n  tasks:\n    - command: echo\n      connection: winrm\n",
            ":4: unsupported connection 'winrm'",
        ),
        (
            "- hosts: all\n  tasks:\n    - command: echo\n      debugger: on_failed\n",
            ":4: unsupported task keyword 'debugger'",
        ),
        // Action plugins mitogen-ansible lacks: refused before the first
        // task, never run as their bare module (issue 21).
        (
            "- hosts: all\n  tasks:\n    - command: echo\n    - uri: url=http://127.0.0.1:9/\n",
            ":4: unsupported action 'uri': ansible-core's action plugin 'uri'",
        ),
        (
            "- hosts: all\n  tasks:\n    - ansible.builtin.unarchive: src=/tmp/x.tgz dest=/tmp remote_src=true\n",
            "unsupported action 'ansible.builtin.unarchive'",
        ),
        (
            "- hosts: all\n  tasks:\n    - pause: seconds=1\n",
            "unsupported action 'pause'",
        ),
        (
            "- hosts: all\n  tasks:\n    - mtg.tools.acted: {}\n",
            "unsupported action 'mtg.tools.acted': it has a Python action plugin",
        ),
        (
            "- hosts: all\n  collections: [mtg.tools]\n  tasks:\n    - acted: {}\n",
            "unsupported action 'mtg.tools.acted'",
        ),
        (
            "- hosts: all\n  tasks:\n    - ping:\n    - mtg_local_act: {}\n",
            ":4: unsupported action 'mtg_local_act': its Python action plugin",
        ),
        // One that overrides a controller-side action (ansible-core's
        // module_defaults target ships an action_plugins/debug.py).
        (
            "- hosts: all\n  tasks:\n    - fail: msg=x\n",
            ":3: unsupported action 'fail': its Python action plugin",
        ),
    ];
    // A playbook-adjacent action plugin (for the last case).
    std::fs::create_dir_all(scratch.0.join("action_plugins")).unwrap();
    std::fs::write(
        scratch.0.join("action_plugins/mtg_local_act.py"),
        "from ansible.plugins.action import ActionBase\nclass ActionModule(ActionBase):\n    pass\n",
    )
    .unwrap();
    std::fs::copy(
        scratch.0.join("action_plugins/mtg_local_act.py"),
        scratch.0.join("action_plugins/fail.py"),
    )
    .unwrap();
    for (i, (pb, want)) in cases.iter().enumerate() {
        let path = scratch.0.join(format!("bad{i}.yml"));
        // A first task that would leave a marker if anything ran.
        std::fs::write(&path, pb).unwrap();
        let json = scratch.0.join(format!("bad{i}.jsonl"));
        let out = Command::new(env!("CARGO_BIN_EXE_mitogen-play"))
            .arg("-i")
            .arg(&inv)
            .arg(&path)
            .arg("--json")
            .arg(&json)
            .arg("--ansible-python")
            .arg(&py)
            .env("ANSIBLE_COLLECTIONS_PATH", fixtures().join("collections"))
            .current_dir(&scratch.0)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "case {i}: {err}");
        assert!(
            err.contains(want) && err.contains(&format!("bad{i}.yml")),
            "case {i}: want {want:?} in {err}"
        );
        assert!(!json.exists(), "case {i}: something ran");
    }
}

/// A vaulted vars file with a wrong password (from the command line or
/// `ANSIBLE_VAULT_PASSWORD_FILE`), or with no vault secret at all, stops
/// the run before any task, with ansible-core's message (taken from
/// ansible-playbook's own output, not written here).
fn vault_failures_say_what_ansible_says() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("vault");
    std::fs::create_dir_all(scratch.0.join("home")).unwrap();
    let inv = scratch.0.join("inv");
    std::fs::write(&inv, LOCAL3).unwrap();
    let wrong = scratch.0.join("wrong-pass");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let wrong = wrong.display().to_string();
    let runs: [(&[&str], Option<&str>); 3] = [
        (&["--vault-password-file", &wrong], None),
        (&[], Some(&wrong)),
        (&[], None),
    ];
    let bin = py.parent().unwrap();
    let json = scratch.0.join("vault.jsonl");
    for (args, env_file) in runs {
        let run = |prog: &Path, extra: &[&std::ffi::OsStr]| {
            let mut c = Command::new(prog);
            env_cmd(&mut c, &scratch.0, bin);
            if let Some(f) = env_file {
                c.env("ANSIBLE_VAULT_PASSWORD_FILE", f);
            }
            c.arg("-i")
                .arg(&inv)
                .arg(fixtures().join("17_vault.yml"))
                .args(args)
                .args(extra)
                .output()
                .unwrap()
        };
        let theirs = run(&bin.join("ansible-playbook"), &[]);
        let their_err = String::from_utf8_lossy(&theirs.stderr).into_owned()
            + &String::from_utf8_lossy(&theirs.stdout);
        let want = their_err
            .lines()
            .find_map(|l| l.strip_prefix("[ERROR]: "))
            .unwrap_or_else(|| panic!("ansible-playbook {args:?} did not fail: {their_err}"))
            .to_owned();
        assert!(want.contains("vault"), "{want}");
        let ours = run(
            Path::new(env!("CARGO_BIN_EXE_mitogen-play")),
            &[
                "--json".as_ref(),
                json.as_os_str(),
                "--ansible-python".as_ref(),
                py.as_os_str(),
            ],
        );
        let our_err = String::from_utf8_lossy(&ours.stderr);
        assert!(!ours.status.success(), "{args:?}: {our_err}");
        assert!(
            our_err.contains(&want),
            "{args:?}: want {want:?} in {our_err}"
        );
        assert!(
            read_results(&json).is_empty(),
            "{args:?}: a task ran before the vars file was decrypted"
        );
    }
}

/// `-u`, `-b` and `-K` as ansible-playbook takes them: the become password
/// typed on a terminal (`script` gives each tool a pty and types the
/// answer), `-b` a default that a task's `become: false` overrides. Both
/// tools' results are compared, for the right password and a wrong one.
fn prompted_passwords_and_command_line_defaults() {
    use mitogen_test_support::sshd::{USER_SUDOPW, USER_SUDOPW_PASSWORD};
    let Some(py) = venv_python() else { return };
    if !need_sshd() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed (Debian: bsdutils)");
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let scratch = Scratch::new("prompt");
    let inv = scratch.0.join("inv");
    // No ansible_user: -u names it.
    std::fs::write(
        &inv,
        format!(
            "h1 ansible_host={} ansible_port={} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' ansible_python_interpreter=/usr/bin/python3\n",
            sshd.host(),
            sshd.port(),
            sshd.client_key().display(),
            sshd.known_hosts().display()
        ),
    )
    .unwrap();
    let pb = scratch.0.join("pb.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: id -un\n    - command: id -un\n      become: false\n",
    )
    .unwrap();
    let bin = py.parent().unwrap();
    let sh_quote = |p: &Path| format!("'{}'", p.display());
    for (typed, tag) in [
        (USER_SUDOPW_PASSWORD, "right"),
        ("not-the-password", "wrong"),
    ] {
        let run = |ours: bool| {
            let out_file = scratch.0.join(format!(
                "{tag}-{}.jsonl",
                if ours { "ours" } else { "ansible" }
            ));
            let _ = std::fs::remove_file(&out_file);
            let mut cmd_line = if ours {
                format!(
                    "{} --ansible-python {} --json {}",
                    sh_quote(Path::new(env!("CARGO_BIN_EXE_mitogen-play"))),
                    sh_quote(&py),
                    sh_quote(&out_file)
                )
            } else {
                sh_quote(&bin.join("ansible-playbook"))
            };
            cmd_line += &format!(
                " -i {} {} -u {USER_SUDOPW} -b -K",
                sh_quote(&inv),
                sh_quote(&pb)
            );
            let mut c = Command::new("script");
            env_cmd(&mut c, &scratch.0, bin);
            if !ours {
                c.env(
                    "ANSIBLE_CALLBACK_PLUGINS",
                    mitogen_test_support::ansible::capture_callback_dir(),
                )
                .env("ANSIBLE_CALLBACKS_ENABLED", "capture")
                .env("CAPTURE_FILE", &out_file);
            }
            let mut child = c
                .args(["-qec", &cmd_line, "/dev/null"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Answered once the prompt shows, as a user would.
            use std::io::{Read, Write};
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let reader = std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    let _ = tx.send(buf[..n].to_vec());
                }
            });
            let who = if ours {
                "mitogen-play"
            } else {
                "ansible-playbook"
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut seen = Vec::new();
            let mut answered = false;
            while let Ok(chunk) =
                rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            {
                seen.extend_from_slice(&chunk);
                if !answered && String::from_utf8_lossy(&seen).contains("BECOME password: ") {
                    stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
                    answered = true;
                }
            }
            let finished = matches!(child.try_wait(), Ok(Some(_)))
                || mitogen_test_support::wait_until(Duration::from_secs(5), || {
                    matches!(child.try_wait(), Ok(Some(_)))
                });
            if !finished {
                let _ = child.kill();
            }
            let status = child.wait().unwrap();
            drop(stdin);
            let _ = reader.join();
            let text = String::from_utf8_lossy(&seen).into_owned();
            assert!(finished, "{tag}: {who} did not finish: {text}");
            assert!(answered, "{tag}: {who} showed no prompt: {text}");
            assert!(
                !text.contains(typed),
                "{tag}: {who} echoed the password: {text}"
            );
            (read_results(&out_file), text, status.code())
        };
        let (theirs, their_text, their_code) = run(false);
        let (ours, our_text, our_code) = run(true);
        let want = if tag == "right" { 2 } else { 1 };
        assert_eq!(theirs.len(), want, "{tag}: ansible-playbook: {their_text}");
        assert_eq!(
            our_code, their_code,
            "{tag}: exit codes\nours: {our_text}\ntheirs: {their_text}"
        );
        let bad = compare_results(&ours, &theirs, VOLATILE);
        assert!(bad.is_empty(), "{tag}: {bad:#?}\nours: {our_text}");
        if tag == "right" {
            let mut seen: Vec<String> = theirs
                .values()
                .map(|(_, v)| v["stdout"].as_str().unwrap_or_default().to_owned())
                .collect();
            seen.sort();
            assert_eq!(seen, [USER_SUDOPW, "root"], "{theirs:?}");
        }
    }
}

/// `--list-tasks`, `--list-tags` and `--list-hosts` print what
/// ansible-playbook prints (hosts sorted: ansible-playbook lists a set).
fn listings_match_ansible_playbook() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("lists");
    let inv = scratch.0.join("inv");
    std::fs::write(&inv, LOCAL3).unwrap();
    let bin = py.parent().unwrap();
    let run = |prog: &Path, extra: &[&str], pb: &str, flags: &[&str]| {
        let mut c = Command::new(prog);
        env_cmd(&mut c, &scratch.0, bin);
        let out = c
            .args(extra)
            .arg("-i")
            .arg(&inv)
            .arg(fixtures().join(pb))
            .args(flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "{prog:?} {pb} {flags:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Host lines in a stable order.
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut i = 0;
        while i < lines.len() {
            let j = (i..lines.len())
                .find(|&j| !lines[j].starts_with("      h"))
                .unwrap_or(lines.len());
            lines[i..j].sort();
            i = j + 1;
        }
        lines.join("\n")
    };
    let py_s = py.display().to_string();
    for pb in ["06_blocks.yml", "08_roles.yml", "13_tags.yml"] {
        for flags in [
            &["--list-tasks"][..],
            &["--list-tags"],
            &["--list-tasks", "--tags", "a"],
            &["--list-tasks", "--skip-tags", "a"],
            &["--list-hosts", "-l", "h1:h3"],
        ] {
            let theirs = run(&bin.join("ansible-playbook"), &[], pb, flags);
            let ours = run(
                Path::new(env!("CARGO_BIN_EXE_mitogen-play")),
                &["--ansible-python", &py_s],
                pb,
                flags,
            );
            assert_eq!(ours, theirs, "{pb} {flags:?}");
        }
    }
}

/// The `remote_user`, `port` and `connection` keywords (play and task
/// level) on hosts whose inventory names no user or port, and an
/// `ansible_user` variable winning over the keyword.
fn connection_keywords_ssh() {
    if venv_python().is_none() || !need_sshd() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let scratch = Scratch::new("kw");
    let pb = scratch.0.join("20_keywords.yml");
    std::fs::write(
        &pb,
        format!(
            "- name: keywords\n  hosts: all\n  gather_facts: false\n  remote_user: mtg-key\n  port: {port}\n  tasks:\n    - command: id -un\n    - command: id -un\n      remote_user: mtg-sudo\n    - command: id -un\n      vars:\n        ansible_user: mtg-target\n\
             - name: local\n  hosts: all\n  connection: local\n  gather_facts: false\n  tasks:\n    - command: id -un\n",
            port = sshd.port()
        ),
    )
    .unwrap();
    let inv = format!(
        "[targets]\nh1 ansible_host={} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' ansible_python_interpreter=/usr/bin/python3\nh2 ansible_host={} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' ansible_python_interpreter=/usr/bin/python3\n",
        sshd.host(),
        sshd.client_key().display(),
        sshd.known_hosts().display(),
        sshd.host(),
        sshd.client_key().display(),
        sshd.known_hosts().display(),
    );
    let path: &'static str = Box::leak(pb.display().to_string().into_boxed_str());
    let bad = compare_all("keywords", &inv, &[case(path)]);
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

/// Ctrl-C mid-run: exit 99 with ansible-playbook's message, the results
/// reported so far kept in the `--json` file, and the running task's
/// processes gone with their agent (none left on the target).
fn interrupted_run_ends_like_ansible_playbook() {
    use std::os::unix::process::CommandExt;
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("interrupt");
    let inv = scratch.0.join("inv");
    std::fs::write(&inv, LOCAL3).unwrap();
    let marker = scratch.0.join("sleep.pid");
    let pb = scratch.0.join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: h1\n  gather_facts: false\n  tasks:\n    - ping:\n    - shell: echo $$ > {}; exec sleep 60\n",
            marker.display()
        ),
    )
    .unwrap();
    let json = scratch.0.join("out.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mitogen-play"));
    env_cmd(&mut cmd, &scratch.0, py.parent().unwrap());
    cmd.arg("-i")
        .arg(&inv)
        .arg(&pb)
        .arg("--json")
        .arg(&json)
        .arg("--ansible-python")
        .arg(&py)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec. A shell
    // running this suite in the background leaves SIGINT ignored; a user's
    // terminal does not.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = || -> Option<u32> { std::fs::read_to_string(&marker).ok()?.trim().parse().ok() };
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(60), || pid().is_some()),
        "the long task never started"
    );
    let sleep = pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(99), "{err}");
    assert!(err.contains("[ERROR]: User interrupted execution"), "{err}");
    let results = read_results(&json);
    assert!(
        results.keys().any(|(h, t, _)| h == "h1" && t == "ping"),
        "the finished task's result was lost: {results:?}"
    );
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(15), || {
            mitogen_test_support::process_gone(sleep)
        }),
        "the interrupted task's process {sleep} was left running"
    );
}

/// The plugin host's bad cases: no interpreter, a Python without
/// ansible-core, a plugin that hangs (the deadline kills the host and the
/// next call gets a fresh one), a plugin that raises, an unknown name.
fn plugin_host_failures_are_clear() {
    use mitogen_play::plugins::{Kind, PluginError, PluginHost};
    let Some(py) = venv_python() else { return };
    let missing = PluginHost::new("/nonexistent/python3");
    let e = missing.resolve(Kind::Filter, "x").unwrap_err();
    assert!(e.to_string().contains("cannot start it"), "{e}");
    assert!(!missing.is_running());

    let bare = PluginHost::new("/usr/bin/python3");
    let e = bare.resolve(Kind::Filter, "x").unwrap_err();
    assert!(matches!(e, PluginError::Host { .. }), "{e}");
    assert!(e.to_string().contains("/usr/bin/python3"), "{e}");

    let scratch = Scratch::new("plugin-host");
    let dir = scratch.0.join("filter_plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("slow.py"),
        "import time\n\ndef hang(v):\n    time.sleep(3600)\n\ndef bad(v):\n    raise ValueError('no %s' % v)\n\nclass FilterModule(object):\n    def filters(self):\n        return {'hang': hang, 'bad': bad}\n",
    )
    .unwrap();
    let host = PluginHost::new(&py)
        .playbook_dirs(vec![scratch.0.clone()])
        .timeout(Duration::from_secs(3));
    assert!(host.resolve(Kind::Filter, "hang").unwrap().is_some());
    assert_eq!(host.resolve(Kind::Filter, "no_such_filter").unwrap(), None);
    let t = std::time::Instant::now();
    let e = host
        .call(
            Kind::Filter,
            "hang",
            vec![Value::from(1)],
            Default::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("no answer within 3s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(!host.is_running(), "the hung host was left running");
    // What resolved before stays resolved (no new host is needed to say so).
    assert!(host.has(Kind::Filter, "hang"));
    assert!(!host.is_running());
    // A fresh host serves the next call.
    match host
        .call(
            Kind::Filter,
            "bad",
            vec![Value::from("way")],
            Default::default(),
        )
        .unwrap_err()
    {
        PluginError::Raised { kind, message } => {
            assert_eq!(kind, "ValueError");
            assert_eq!(message, "no way");
        }
        other => panic!("{other}"),
    }
    let j = host
        .call(
            Kind::Filter,
            "to_json",
            vec![serde_json::json!({"a": 1})],
            Default::default(),
        )
        .unwrap();
    assert_eq!(j, Value::from("{\"a\": 1}"));
}

/// Fixtures whose stdout (`-f 1`, no colour, timings normalized) is
/// ansible-playbook's byte for byte: the default callback's lines, JSON,
/// loop items, `[ERROR]` excerpts. Those not listed are printed with their
/// first difference (templating errors' "caused by" chains, `included:`
/// lines, warnings are not there yet).
const STDOUT_SAME: &[&str] = &[
    "01_basics.yml",
    "02_loops.yml",
    "03_linear_fail.yml",
    "06_blocks.yml",
    "10_copy_template.yml",
    "11_delegate_once.yml",
    "12_gather.yml",
    "13_tags.yml",
    "16_hostvars.yml",
    "20_delegate_facts_order_throttle.yml",
    "21_module_defaults.yml",
    "22_collections.yml",
    "25_default_collections.yml",
    "23_written_as_run.yml",
    "26_all_failed.yml",
    "31_builtin_plugins.yml",
    "32_collection_roles.yml",
];

/// What differs between two runs of the same playbook by nature: times,
/// tmp names.
fn normalize_stdout(s: &str) -> String {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#""(start|end|delta)": "[^"]*"|ansible-tmp-[0-9.]+-[0-9]+-[0-9]+|"(atime|mtime|ctime)": [0-9.]+"#,
        )
        .unwrap()
    });
    RE.replace_all(s, "<volatile>").into_owned()
}

fn stdout_of(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    normalize_stdout(&String::from_utf8_lossy(&out.stdout))
}

fn stdout_matches_ansible_playbook() {
    let Some(py) = venv_python() else { return };
    let bin = py.parent().unwrap();
    let scratch = Scratch::new("stdout");
    std::fs::create_dir_all(scratch.0.join("home")).unwrap();
    let missing = missing_actions(&py);
    let (mut same, mut total, mut regressed) = (0, 0, Vec::new());
    for c in cases() {
        if c.needs.iter().any(|a| missing.contains(&a.to_string())) {
            continue;
        }
        total += 1;
        let inv = scratch
            .0
            .join(format!("inv-{}", c.file_name().trim_end_matches(".yml")));
        std::fs::write(&inv, format!("{LOCAL3}{}", c.extra_inventory)).unwrap();
        let run = |program: &Path, ours: bool| {
            let mut cmd = Command::new(program);
            env_cmd(&mut cmd, &scratch.0, bin);
            case_env(&c, &mut cmd);
            cmd.env("ANSIBLE_NOCOLOR", "1")
                .arg("-i")
                .arg(&inv)
                .arg(fixtures().join(c.playbook))
                .args(case_args(&c))
                .arg("-f")
                .arg("1");
            if ours {
                cmd.arg("--ansible-python").arg(&py);
            }
            stdout_of(cmd)
        };
        let theirs = run(&bin.join("ansible-playbook"), false);
        let ours = run(Path::new(env!("CARGO_BIN_EXE_mitogen-play")), true);
        let name = c.file_name().to_owned();
        if ours == theirs {
            same += 1;
            eprintln!("  same      {name}");
            continue;
        }
        let first = ours
            .lines()
            .zip(theirs.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or_else(
                || "(one output is a prefix of the other)".to_owned(),
                |(i, (a, b))| format!("line {}: ours {a:?} / ansible {b:?}", i + 1),
            );
        eprintln!("  differs   {name}: {first}");
        if STDOUT_SAME.contains(&name.as_str()) {
            regressed.push(name);
        }
    }
    eprintln!("stdout: {same} of {total} playbooks print what ansible-playbook prints");
    assert!(
        regressed.is_empty(),
        "stdout no longer ansible-playbook's: {regressed:?}"
    );
}

/// `--version` is ansible-playbook's, under mitogen-play's name and with
/// its own executable: every other line the same as ansible-playbook's.
fn version_says_what_it_runs_with() {
    let Some(py) = venv_python() else { return };
    let ours = Command::new(env!("CARGO_BIN_EXE_mitogen-play"))
        .args(["--version", "--ansible-python"])
        .arg(&py)
        .output()
        .unwrap();
    assert!(ours.status.success());
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    let theirs = Command::new(py.parent().unwrap().join("ansible-playbook"))
        .arg("--version")
        .output()
        .unwrap();
    let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
    let (o, t): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    assert_eq!(o.len(), t.len(), "{ours}\n{theirs}");
    let core = t[0].trim_start_matches("ansible-playbook ");
    assert_eq!(
        o[0],
        format!("mitogen-play {} {core}", env!("CARGO_PKG_VERSION"))
    );
    for (a, b) in o.iter().zip(&t).skip(1) {
        if b.trim_start().starts_with("executable location = ") {
            assert!(a.ends_with("mitogen-play"), "{a}");
        } else {
            assert_eq!(a, b);
        }
    }
}
