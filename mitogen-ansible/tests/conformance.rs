//! Conformance: real ansible-core 2.19 and this runner on the same tasks
//! against the same targets, compared field by field at callback level.
//!
//! ansible-core comes from the venv `scripts/ansible-venv.sh` makes
//! (`$MITOGEN_ANSIBLE_VENV`, default `target/ansible-venv`). Without it the
//! tests skip loudly, naming that command; under `CI=true` they fail.
//! ssh cases use the throw-away loopback sshd and the test users of
//! `scripts/test-hosts.sh setup`.

use mitogen_ansible::{Connection, ModuleSource, Runner, Status, Target, Task};
use mitogen_core::layer::LayerRouter;
use mitogen_core::{Context, Local, Registry, Router, RouterOptions};
use mitogen_ssh::{Ssh, Sudo};
use mitogen_test_support::sshd::{Sshd, sshd_available};

use mitogen_test_support::ansible::venv_python;
use mitogen_test_support::{skip, tests};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Fields that differ between any two runs (timings, pids). Temp and job
/// names inside values are replaced by [`normalize`].
const VOLATILE: &[&str] = &["start", "end", "delta", "child_pid"];

/// A string with the names that differ between runs made alike: remote
/// tmp dirs (`ansible-tmp-<time>-<pid>-<rand>`), controller temp files
/// (`ansible-local-<pid><rand>/tmp<rand>`, mkstemp's `.<8 chars>`), async
/// job ids (`j<n>.<pid>`) and backup suffixes (`.<pid>.<date>@<time>~`).
fn normalize(s: &str) -> String {
    fn word(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = |t: &str| {
            t.find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(t.len())
        };
        if let Some(t) = rest.strip_prefix("ansible-tmp-") {
            // <time>-<pid>-<rand>
            let mut n = 0;
            let mut parts = 0;
            while parts < 3 {
                let d = digits(&t[n..]);
                if d == 0 {
                    break;
                }
                n += d;
                parts += 1;
                if parts < 3 && t[n..].starts_with('-') {
                    n += 1;
                }
            }
            out.push_str("ansible-tmp-X");
            rest = &t[n..];
        } else if let Some(t) = rest.strip_prefix("ansible-local-") {
            let n = t.find('/').unwrap_or(t.len());
            out.push_str("ansible-local-X");
            rest = &t[n..];
            if let Some(t2) = rest.strip_prefix("/tmp") {
                let n = t2.find('/').unwrap_or(t2.len());
                out.push_str("/tmpX");
                rest = &t2[n..];
            } else if let Some(t2) = rest.strip_prefix("/.") {
                let n = t2.find(|c: char| !word(c)).unwrap_or(t2.len());
                out.push_str("/.X");
                rest = &t2[n..];
            }
        } else if rest.starts_with('j')
            && out.chars().last().is_none_or(|c| !word(c))
            && rest[1..].starts_with(|c: char| c.is_ascii_digit())
        {
            let n = 1 + rest[1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - 1);
            let t = &rest[n..];
            if let Some(p) = t.strip_prefix('.') {
                let m = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                if m > 0 {
                    out.push_str("jJOB");
                    rest = &p[m..];
                    continue;
                }
            }
            out.push_str(&rest[..n]);
            rest = t;
        } else if rest.ends_with('~')
            && rest.starts_with('.')
            && rest.contains('@')
            && rest.len() < 40
        {
            out.push_str(".BACKUP~");
            rest = "";
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // mkstemp(prefix='.') base names alone (`_original_basename`).
    if out.len() == 9 && out.starts_with('.') && out[1..].chars().all(word) {
        return ".X".into();
    }
    out
}

fn register(reg: &mut Registry) {
    mitogen_ssh::register(reg);
    mitogen_ansible::register(reg);
}

fn main() {
    mitogen_core::agent_main(register);
    mitogen_test_support::run(tests![
        styles_and_actions_local,
        styles_and_actions_ssh,
        become_root_and_unprivileged_ssh,
        actions_local,
        actions_ssh,
        actions_become_ssh,
        async_jobs_read_across_runners,
        tmp_dir_removed_unless_kept,
        unknown_module_lists_paths,
        module_utils_shipped_once_per_context,
        controller_cache_spares_python_and_notices_changes,
        hung_task_killed_with_its_group,
        module_leaving_a_daemon_ends_with_its_process,
        dead_fork_server_replaced,
        lost_connection_is_unreachable,
        agent_losing_its_parent_ends_its_tasks,
    ]);
}

fn router() -> Router {
    Router::new(RouterOptions::new(), Registry::new(register)).expect("router")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A scratch dir removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mtg-ans-{tag}-{}", std::process::id()));
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

/// Builds the statically linked binary module into `dir/binary_mod`.
fn build_binary_module(dir: &Path) {
    let out = dir.join("binary_mod");
    let st = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-O")
        .args(["-C", "target-feature=+crt-static", "-o"])
        .arg(&out)
        .arg(fixtures().join("src/binary_module.rs"))
        .status()
        .expect("rustc");
    assert!(st.success(), "building the binary module failed");
}

/// One conformance case.
#[derive(Clone)]
struct Case {
    name: &'static str,
    module: &'static str,
    args: Value,
    check: bool,
    diff: bool,
    no_log: bool,
    env: Vec<(&'static str, &'static str)>,
    vars: Option<Value>,
    /// `async:` and `poll:`.
    async_poll: Option<(u64, u64)>,
    register: Option<&'static str>,
    /// More ansible-only task keywords (`until`, ...).
    ansible_extra: Option<Value>,
}

fn case(name: &'static str, module: &'static str, args: Value) -> Case {
    Case {
        name,
        module,
        args,
        check: false,
        diff: false,
        no_log: false,
        env: Vec::new(),
        vars: None,
        async_poll: None,
        register: None,
        ansible_extra: None,
    }
}

impl Case {
    fn check(mut self) -> Self {
        self.check = true;
        self
    }
    fn diff(mut self) -> Self {
        self.diff = true;
        self
    }
    fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }
    fn env(mut self, k: &'static str, v: &'static str) -> Self {
        self.env.push((k, v));
        self
    }
    fn vars(mut self, v: Value) -> Self {
        self.vars = Some(v);
        self
    }
    fn async_poll(mut self, limit: u64, poll: u64) -> Self {
        self.async_poll = Some((limit, poll));
        self
    }
    fn register(mut self, name: &'static str) -> Self {
        self.register = Some(name);
        self
    }

    fn ansible_task(&self) -> Value {
        let mut t = Map::new();
        t.insert("name".into(), self.name.into());
        t.insert(self.module.into(), self.args.clone());
        t.insert("ignore_errors".into(), true.into());
        if self.check {
            t.insert("check_mode".into(), true.into());
        }
        if self.diff {
            t.insert("diff".into(), true.into());
        }
        if self.no_log {
            t.insert("no_log".into(), true.into());
        }
        if let Some(v) = &self.vars {
            t.insert("vars".into(), v.clone());
        }
        if let Some((a, p)) = self.async_poll {
            t.insert("async".into(), a.into());
            t.insert("poll".into(), p.into());
        }
        if let Some(r) = self.register {
            t.insert("register".into(), r.into());
        }
        if let Some(Value::Object(x)) = &self.ansible_extra {
            t.extend(x.clone());
        }
        if !self.env.is_empty() {
            let e: Map<String, Value> = self
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            t.insert("environment".into(), Value::Object(e));
        }
        Value::Object(t)
    }

    /// Our task; `{{ NAME.ansible_job_id }}` in string args is taken from
    /// the earlier results in `registered`.
    fn task(&self, registered: &BTreeMap<String, Value>) -> Task {
        let mut args = self.args.clone();
        if let Value::Object(m) = &mut args {
            for v in m.values_mut() {
                if let Value::String(s) = v {
                    for (name, r) in registered {
                        let pat = format!("{{{{ {name}.ansible_job_id }}}}");
                        if let Some(j) = r.get("ansible_job_id").and_then(Value::as_str) {
                            *s = s.replace(&pat, j);
                        }
                    }
                }
            }
        }
        let mut t = Task::new(self.module)
            .args(args)
            .check_mode(self.check)
            .diff(self.diff)
            .no_log(self.no_log)
            .timeout(Duration::from_secs(120));
        for (k, v) in &self.env {
            t = t.env(k, v);
        }
        if let Some(Value::Object(v)) = &self.vars {
            t = t.vars(v.clone());
        }
        if let Some((a, p)) = self.async_poll {
            t = t.async_limit(a).poll(p);
        }
        t
    }
}

/// Every style, the actions, failures, check/diff/no_log/environment.
fn cases() -> Vec<Case> {
    vec![
        case("ping", "ansible.builtin.ping", json!({})),
        case("ping_data", "ping", json!({"data": "pong2"})),
        case(
            "ping_bad_arg",
            "ansible.builtin.ping",
            json!({"data": "x", "bogus_option": 1}),
        ),
        case(
            "command_ok",
            "ansible.builtin.command",
            json!({"cmd": "echo hello"}),
        ),
        case("command_free_form", "command", json!("echo free form")),
        case(
            "command_rc",
            "ansible.builtin.command",
            json!({"cmd": "sh -c 'echo out; echo err >&2; exit 3'"}),
        ),
        case(
            "command_not_found",
            "ansible.builtin.command",
            json!({"cmd": "no-such-command-mtg x"}),
        ),
        case(
            "command_check",
            "ansible.builtin.command",
            json!({"cmd": "true"}),
        )
        .check(),
        case(
            "command_creates",
            "ansible.builtin.command",
            json!({"cmd": "true", "creates": "/"}),
        ),
        case(
            "command_missing_required",
            "ansible.builtin.command",
            json!({}),
        ),
        case(
            "shell_pipe",
            "ansible.builtin.shell",
            json!("echo one | tr o 0; echo two >&2"),
        ),
        case(
            "shell_env",
            "ansible.builtin.shell",
            json!("echo \"$MTG_VAR\""),
        )
        .env("MTG_VAR", "value with spaces"),
        case(
            "raw_ok",
            "ansible.builtin.raw",
            json!("echo raw-out; echo raw-err 1>&2"),
        ),
        case("raw_rc", "ansible.builtin.raw", json!("exit 4")),
        case(
            "stat_missing",
            "ansible.builtin.stat",
            json!({"path": "/nonexistent-mtg-stat"}),
        ),
        case(
            "slurp_missing",
            "ansible.builtin.slurp",
            json!({"src": "/nonexistent-mtg-slurp"}),
        ),
        case(
            "file_absent_diff",
            "ansible.builtin.file",
            json!({"path": "/nonexistent-mtg-file", "state": "absent"}),
        )
        .diff(),
        case(
            "lineinfile_check_diff",
            "ansible.builtin.lineinfile",
            json!({"path": "/etc/hostname", "line": "mtg-line"}),
        )
        .check()
        .diff(),
        case(
            "setup_min",
            "ansible.builtin.setup",
            json!({"gather_subset": ["!all", "!min"], "filter": ["ansible_system"]}),
        ),
        case(
            "no_log_ping",
            "ansible.builtin.ping",
            json!({"data": "secret"}),
        )
        .no_log(),
        case("user_new_style", "my_new", json!({"name": "bob"})),
        case("user_new_style_check", "my_new", json!({"name": "bob"})).check(),
        case("user_new_style_diff", "my_new", json!({"name": "d"})).diff(),
        case(
            "user_no_log_param",
            "my_new",
            json!({"name": "n", "secret": "hunter2"}),
        ),
        case("user_warning", "my_new", json!({"name": "w", "warn": true})),
        case(
            "user_env",
            "my_new",
            json!({"name": "e", "env_var": "MTG_ENV"}),
        )
        .env("MTG_ENV", "from env"),
        case("user_missing_required", "my_new", json!({})),
        case("no_check_mode_support", "no_check", json!({})).check(),
        case("module_raises", "raises", json!({})),
        case("junk_around_json", "junk", json!({})),
        case("no_exit", "no_exit", json!({})),
        case("no_json", "no_json", json!({})),
        case("bad_json", "bad_json", json!({})),
        case("internal_keys", "internal_keys", json!({})),
        case(
            "old_style",
            "old_style",
            json!({"msg": "hi there", "num": 3}),
        ),
        case("want_json", "want_json", json!({"name": "alice"})),
        case("want_json_check", "want_json", json!({"name": "c"})).check(),
        case("json_args", "json_args", json!({"value": [1, "two"]})),
        case("perl_want_json", "perl_mod", json!({"x": 1})),
        case("binary", "binary_mod", json!({"y": 2})),
        case("binary_check", "binary_mod", json!({})).check(),
        case("no_shebang", "no_shebang_old", json!({})),
        case(
            "collection_module",
            "mtg.test.greet",
            json!({"name": "coll"}),
        ),
        case("collection_default", "mtg.test.greet", json!({})),
    ]
}

/// Runs `cases` with ansible-playbook against `hosts` (inventory lines)
/// and returns `host -> case -> (status, result)`.
fn run_ansible(
    python: &Path,
    scratch: &Path,
    extra_library: &Path,
    inventory: &str,
    plays: &[(&str, &[Case])],
) -> BTreeMap<(String, String), (String, Value)> {
    run_ansible_with(python, scratch, extra_library, inventory, plays, None)
}

/// [`run_ansible`] with `HOME` for ansible-playbook (default a scratch dir).
fn run_ansible_with(
    python: &Path,
    scratch: &Path,
    extra_library: &Path,
    inventory: &str,
    plays: &[(&str, &[Case])],
    home: Option<&Path>,
) -> BTreeMap<(String, String), (String, Value)> {
    let bin = python.parent().unwrap();
    let inv = scratch.join("inventory");
    std::fs::write(&inv, inventory).unwrap();
    let pb: Vec<Value> = plays
        .iter()
        .map(|(hosts, cases)| {
            // A registered case is followed by `debug: var=<name>`: its
            // result shows what `register:` stored.
            let tasks: Vec<Value> = cases
                .iter()
                .flat_map(|c| {
                    let mut t = vec![c.ansible_task()];
                    if let Some(r) = c.register {
                        t.push(
                            json!({"name": format!("{}__register", c.name), "debug": {"var": r}}),
                        );
                    }
                    t
                })
                .collect();
            json!({"hosts": hosts, "gather_facts": false, "tasks": tasks})
        })
        .collect();
    let pb_path = scratch.join("playbook.json");
    std::fs::write(&pb_path, serde_json::to_vec(&pb).unwrap()).unwrap();
    let capture = scratch.join("capture.jsonl");
    let _ = std::fs::remove_file(&capture);
    let home = home.map_or_else(|| scratch.join("home"), Path::to_owned);
    std::fs::create_dir_all(&home).unwrap();
    let lib = format!(
        "{}:{}",
        fixtures().join("library").display(),
        extra_library.display()
    );
    let out = Command::new(bin.join("ansible-playbook"))
        .arg("-i")
        .arg(&inv)
        .arg(&pb_path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("ANSIBLE_LOCAL_TEMP", scratch.join("local-tmp"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_CALLBACK_PLUGINS",
            fixtures().join("callback_plugins"),
        )
        .env("ANSIBLE_CALLBACKS_ENABLED", "capture")
        .env("ANSIBLE_LIBRARY", lib)
        .env("ANSIBLE_COLLECTIONS_PATH", fixtures().join("collections"))
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", scratch.join("cp"))
        .env("CAPTURE_FILE", &capture)
        .current_dir(scratch)
        .output()
        .expect("ansible-playbook");
    let text = std::fs::read_to_string(&capture).unwrap_or_else(|_| {
        panic!(
            "ansible-playbook captured nothing: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut res = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let host = v["host"].as_str().unwrap_or("").to_owned();
        let task = v["task"].as_str().unwrap_or("").to_owned();
        res.insert(
            (host, task),
            (
                v["status"].as_str().unwrap_or("").to_owned(),
                v["result"].clone(),
            ),
        );
    }
    res
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok | Status::Changed => "ok",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Unreachable => "unreachable",
        _ => "other",
    }
}

/// Field-by-field differences, ignoring [`VOLATILE`] keys anywhere.
fn diff(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    mitogen_test_support::ansible::diff_values(
        path,
        ours,
        theirs,
        VOLATILE,
        &|_, a, b| payload_paths(&normalize(a)) == payload_paths(&normalize(b)),
        out,
    );
}

/// Tracebacks name the module's payload dir (a temp name under ansible,
/// the cache tree here): `File "<anything>/ansible/` becomes `File "…/ansible/`.
fn payload_paths(s: &str) -> String {
    let s = s.replace("File \\\"", "File \"");
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("File \"") {
        let (head, tail) = rest.split_at(i + 6);
        out.push_str(head);
        match tail.find("/ansible/") {
            Some(j) if !tail[..j].contains('"') => {
                out.push('…');
                rest = &tail[j..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Runs every case through `runner` on `target` and compares with
/// ansible's results for `host`; panics listing every mismatch.
fn compare(
    runner: &Runner,
    target: &Target,
    host: &str,
    cases: &[Case],
    theirs: &BTreeMap<(String, String), (String, Value)>,
) {
    let mut bad = Vec::new();
    let mut matched = 0;
    let mut registered = BTreeMap::new();
    for c in cases {
        let mut register_diff = Vec::new();
        let ours = match runner.run(target.clone(), &c.task(&registered)) {
            Ok(r) => {
                if let Some(name) = c.register {
                    registered.insert(name.to_owned(), r.register.clone());
                    match theirs.get(&(host.to_owned(), format!("{}__register", c.name))) {
                        Some((_, t)) => diff("register", &r.register, &t[name], &mut register_diff),
                        None => register_diff.push("register: ansible's debug missing".into()),
                    }
                }
                (status_name(r.status).to_owned(), r.result)
            }
            Err(e) => ("error".to_owned(), json!({"msg": e.to_string()})),
        };
        let Some(t) = theirs.get(&(host.to_owned(), c.name.to_owned())) else {
            bad.push(format!("{host}/{}: ansible produced no result", c.name));
            continue;
        };
        let mut d = Vec::new();
        if ours.0 != t.0 {
            d.push(format!("status: ours {} != ansible {}", ours.0, t.0));
        }
        diff("", &ours.1, &t.1, &mut d);
        d.extend(register_diff);
        if d.is_empty() {
            matched += 1;
            eprintln!("  match     {host}/{}", c.name);
        } else {
            eprintln!(
                "  MISMATCH  {host}/{}:\n      {}",
                c.name,
                d.join("\n      ")
            );
            if std::env::var_os("MTG_CONFORMANCE_VERBOSE").is_some() {
                eprintln!("      ours:    {}\n      ansible: {}", ours.1, t.1);
            }
            bad.push(format!("{host}/{}", c.name));
        }
    }
    eprintln!("{host}: {matched}/{} cases match ansible-core", cases.len());
    assert!(bad.is_empty(), "mismatches: {bad:?}");
}

fn source(python: &Path, extra_library: &Path) -> ModuleSource {
    ModuleSource::from_ansible_core(python)
        .unwrap()
        .library_dir(fixtures().join("library"))
        .library_dir(extra_library)
        .collections_path(fixtures().join("collections"))
}

fn styles_and_actions_local() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("local");
    build_binary_module(&scratch.0);
    let cases = cases();
    let theirs = run_ansible(
        &py,
        &scratch.0,
        &scratch.0,
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
        &[("localhost", &cases)],
    );
    let r = router();
    let ctx = r.connect(&Local::new()).unwrap();
    let runner = Runner::new(source(&py, &scratch.0));
    let target = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    // ansible's local connection runs in its cwd: ours in the test's, so
    // compare from the same dir.
    compare(&runner, &target, "localhost", &cases, &theirs);
}

fn ssh_target(sshd: &Sshd, user: &str) -> Ssh {
    Ssh::new(sshd.host())
        .port(sshd.port())
        .user(user)
        .identity_file(sshd.client_key())
        .known_hosts_file(sshd.known_hosts())
        .connect_timeout(Duration::from_secs(20))
}

fn ssh_inventory_line(name: &str, sshd: &Sshd, user: &str, extra: &str) -> String {
    format!(
        "{name} ansible_host={} ansible_port={} ansible_user={user} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' {extra}\n",
        sshd.host(),
        sshd.port(),
        sshd.client_key().display(),
        sshd.known_hosts().display()
    )
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

fn styles_and_actions_ssh() {
    let Some(py) = venv_python() else { return };
    if !need_sshd() {
        return;
    }
    let scratch = Scratch::new("ssh");
    build_binary_module(&scratch.0);
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let cases = cases();
    let theirs = run_ansible(
        &py,
        &scratch.0,
        &scratch.0,
        &ssh_inventory_line("h_key", &sshd, "mtg-key", ""),
        &[("h_key", &cases)],
    );
    let r = router();
    let ctx = r.connect(&ssh_target(&sshd, "mtg-key")).unwrap();
    let runner = Runner::new(source(&py, &scratch.0));
    let target = Target::new(&ctx, "h_key").connection(Connection::Ssh {
        host: sshd.host().to_owned(),
    });
    compare(&runner, &target, "h_key", &cases, &theirs);
}

fn become_cases() -> Vec<Case> {
    vec![
        case(
            "whoami",
            "ansible.builtin.command",
            json!({"cmd": "id -un"}),
        ),
        case("ping", "ansible.builtin.ping", json!({})),
        case("user_module", "my_new", json!({"name": "become"})),
        case("collection", "mtg.test.greet", json!({})),
        case("old_style", "old_style", json!({"msg": "m", "num": 1})),
    ]
}

fn become_root_and_unprivileged_ssh() {
    let Some(py) = venv_python() else { return };
    if !need_sshd() {
        return;
    }
    let scratch = Scratch::new("become");
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let cases = become_cases();
    let new_style: Vec<Case> = cases
        .iter()
        .filter(|c| c.name != "old_style")
        .cloned()
        .collect();
    let inv = ssh_inventory_line(
        "h_root",
        &sshd,
        "mtg-sudo",
        "ansible_become=true ansible_become_user=root",
    ) + &ssh_inventory_line(
        "h_unpriv",
        &sshd,
        "mtg-sudo",
        "ansible_become=true ansible_become_user=mtg-target ansible_pipelining=true",
    );
    let theirs = run_ansible(
        &py,
        &scratch.0,
        &scratch.0,
        &inv,
        &[("h_root", &cases), ("h_unpriv", &new_style)],
    );
    let r = router();
    let via = r.connect(&ssh_target(&sshd, "mtg-sudo")).unwrap();
    let runner = Runner::new(source(&py, &scratch.0));
    let root = r.connect_via(&Sudo::new("root"), &via).unwrap();
    let ssh = Connection::Ssh {
        host: sshd.host().to_owned(),
    };
    compare(
        &runner,
        &Target::new(&root, "h_root")
            .connection(ssh.clone())
            .become_from("mtg-sudo"),
        "h_root",
        &cases,
        &theirs,
    );
    let unpriv = r.connect_via(&Sudo::new("mtg-target"), &via).unwrap();
    compare(
        &runner,
        &Target::new(&unpriv, "h_unpriv")
            .connection(ssh)
            .become_from("mtg-sudo")
            .become_unprivileged(true)
            .pipelining(true),
        "h_unpriv",
        &new_style,
        &theirs,
    );
}

fn local_runner() -> Option<(Runner, Router, Context)> {
    let py = venv_python()?;
    let r = router();
    let ctx = r.connect(&Local::new()).unwrap();
    let runner = Runner::new(
        ModuleSource::from_ansible_core(&py)
            .unwrap()
            .library_dir(fixtures().join("library")),
    );
    Some((runner, r, ctx))
}

fn unknown_module_lists_paths() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let e = runner
        .run(&ctx, &Task::new("no_such_module_mtg"))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, mitogen_ansible::Error::UnknownModule { .. }),
        "{e}"
    );
    assert!(text.contains("library/no_such_module_mtg.py"), "{text}");
    assert!(text.contains("modules/no_such_module_mtg.py"), "{text}");
}

fn module_utils_shipped_once_per_context() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    // The second run of the same module sends no blobs: the first reply
    // told the controller they are there, and the fork server is reused.
    let a = runner
        .run(t.clone(), &Task::new("my_new").args(json!({"name": "a"})))
        .unwrap();
    let before = _r.stream_bytes(ctx.id());
    let b = runner
        .run(t, &Task::new("my_new").args(json!({"name": "b"})))
        .unwrap();
    let after = _r.stream_bytes(ctx.id());
    assert_eq!(a.result["hello"], "a");
    assert_eq!(b.result["hello"], "b");
    let (Some((tx0, _)), Some((tx1, _))) = (before, after) else {
        panic!("no stream stats")
    };
    assert!(tx1 - tx0 < 20_000, "second task sent {} bytes", tx1 - tx0);
}

/// The controller cache (`~/.cache/mitogen-rs/ansible`): a second
/// `ModuleSource` and a second runner's payload start no Python on the
/// controller; a changed interpreter or module file is noticed.
fn controller_cache_spares_python_and_notices_changes() {
    let Some(py) = venv_python() else {
        return;
    };
    let dir = Scratch::new("ctl-cache");
    let log = dir.0.join("python.log");
    // The real interpreter behind a script that notes what it was asked.
    let wrapper = dir.0.join("python");
    let write_wrapper = |extra: &str| {
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# {extra}\nprintf '%.24s\\n' \"$2\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                py.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    };
    write_wrapper("first");
    let library = dir.0.join("library");
    std::fs::create_dir(&library).unwrap();
    let module = library.join("cache_probe.py");
    let module_text = std::fs::read_to_string(fixtures().join("library/my_new.py")).unwrap();
    std::fs::write(&module, &module_text).unwrap();
    let runs = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(what))
            .count()
    };
    const CORE: &str = "import os, ansible";
    const FINDER: &str = "# mitogen-ansible module";

    let old = std::env::var_os("XDG_CACHE_HOME");
    // SAFETY: this harness runs one test at a time and no thread of this
    // test reads the environment while it is changed.
    unsafe { std::env::set_var("XDG_CACHE_HOME", dir.0.join("cache")) };
    let restore = Defer(Some(move || match old {
        // SAFETY: as above.
        Some(v) => unsafe { std::env::set_var("XDG_CACHE_HOME", v) },
        None => unsafe { std::env::remove_var("XDG_CACHE_HOME") },
    }));

    let r = router();
    let ctx = r.connect(&Local::new()).unwrap();
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    let run_probe = || {
        let src = ModuleSource::from_ansible_core(&wrapper)
            .unwrap()
            .library_dir(&library);
        let res = Runner::new(src)
            .run(
                t.clone(),
                &Task::new("cache_probe").args(json!({"name": "x"})),
            )
            .unwrap();
        assert_eq!(res.result["hello"], "x", "{}", res.result);
    };
    run_probe();
    assert_eq!((runs(CORE), runs(FINDER)), (1, 1), "first run");
    run_probe();
    assert_eq!(
        (runs(CORE), runs(FINDER)),
        (1, 1),
        "second run asked python again"
    );
    // A changed module file: its payload is worked out again.
    std::fs::write(&module, format!("{module_text}\n# changed\n")).unwrap();
    run_probe();
    assert_eq!(
        (runs(CORE), runs(FINDER)),
        (1, 2),
        "after the module changed"
    );
    // A changed interpreter: ansible-core is asked again.
    write_wrapper("second, longer than the first");
    run_probe();
    assert_eq!(runs(CORE), 2, "after the interpreter changed");
    drop(restore);
}

/// Runs its closure when dropped (also when the test panics).
struct Defer<F: FnOnce()>(Option<F>);
impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn hung_task_killed_with_its_group() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let marker = std::env::temp_dir().join(format!("mtg-ans-hung-{}", std::process::id()));
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    let cmd = format!("sh -c 'sleep 30 & echo $! > {}; wait'", marker.display());
    let r = runner
        .run(
            t.clone(),
            &Task::new("command")
                .args(json!(cmd))
                .timeout(Duration::from_secs(2)),
        )
        .unwrap();
    assert_eq!(r.status, Status::Failed, "{}", r.result);
    let pid: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&marker);
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(5), || {
            mitogen_test_support::process_gone(pid)
        }),
        "the task's background sleep {pid} survived"
    );
    // The fork server still works afterwards.
    let ok = runner.run(t, &Task::new("ping")).unwrap();
    assert_eq!(ok.status, Status::Ok);
}

fn module_leaving_a_daemon_ends_with_its_process() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let marker = std::env::temp_dir().join(format!("mtg-ans-daemon-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    let r = runner
        .run(
            t,
            &Task::new("daemon_exit")
                .args(json!({"marker": marker, "linger": 30}))
                .timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let daemon = mitogen_test_support::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| !s.is_empty())
    })
    .then(|| std::fs::read_to_string(&marker).unwrap());
    let _ = std::fs::remove_file(&marker);
    if let Some(pid) = daemon.as_deref().and_then(|p| p.trim().parse::<i32>().ok()) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert_eq!(r.status, Status::Ok, "{}", r.result);
    // Not a speed check: a runner waiting on the daemon takes the whole
    // 10 s deadline (and a correct one well under a second).
    assert!(
        r.timings.total < Duration::from_secs(8),
        "the task waited for the module's daemon: {:?}",
        r.timings.total
    );
    assert_eq!(r.result["daemon"], json!(true), "{}", r.result);
    assert!(daemon.is_some(), "the module's daemon never started");
}

fn dead_fork_server_replaced() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    // A module that kills its parent (the fork server) mid-task.
    let e = runner
        .run(
            t.clone(),
            &Task::new("shell").args(json!("kill -9 $(ps -o ppid= -p $PPID)")),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("fork server (/usr/bin/python3) died"),
        "{e}"
    );
    let ok = runner.run(t, &Task::new("ping")).unwrap();
    assert_eq!(ok.status, Status::Ok, "{}", ok.result);
}

fn lost_connection_is_unreachable() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    // The agent itself dies mid-task: the task is unreachable, not a hang.
    let r = runner
        .run(
            t,
            &Task::new("raw")
                .args(json!("kill -9 $PPID; sleep 5"))
                .timeout(Duration::from_secs(30)),
        )
        .unwrap();
    assert_eq!(r.status, Status::Unreachable, "{}", r.result);
}

/// A controller interrupted mid-task: the agent running the task loses its
/// parent, shuts down, and takes its fork server and the task's processes
/// with it instead of leaving them running on the target.
fn agent_losing_its_parent_ends_its_tasks() {
    let Some(py) = venv_python() else {
        return;
    };
    let r = router();
    let a = r.connect(&Local::new()).unwrap();
    let b = r.connect_via(&Local::new(), &a).unwrap();
    let runner = std::sync::Arc::new(Runner::new(ModuleSource::from_ansible_core(&py).unwrap()));
    let marker = std::env::temp_dir().join(format!("mtg-ans-orphan-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let task = {
        let (runner, b, marker) = (runner.clone(), b, marker.clone());
        std::thread::spawn(move || {
            let t = Target::new(&b, "localhost").python_interpreter("/usr/bin/python3");
            let cmd = format!("sh -c 'echo $$ > {}; exec sleep 60'", marker.display());
            runner.run(
                t,
                &Task::new("command")
                    .args(json!(cmd))
                    .timeout(Duration::from_secs(90)),
            )
        })
    };
    let pid = || -> Option<u32> { std::fs::read_to_string(&marker).ok()?.trim().parse().ok() };
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(60), || pid().is_some()),
        "the task never started"
    );
    let sleep = pid().unwrap();
    // `a`'s agent (the raw command's parent) is b's parent: kill it hard.
    let t = Target::new(&a, "localhost").python_interpreter("/usr/bin/python3");
    let out = runner
        .run(t, &Task::new("raw").args(json!("echo $PPID")))
        .unwrap();
    let agent_a: u32 = out.result["stdout"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {}", out.result));
    mitogen_test_support::kill9(agent_a);
    let r = task.join().unwrap().unwrap();
    assert_eq!(r.status, Status::Unreachable, "{}", r.result);
    let _ = std::fs::remove_file(&marker);
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(15), || {
            mitogen_test_support::process_gone(sleep)
        }),
        "the task's process {sleep} outlived its agent"
    );
}

// ---------------------------------------------------------------------------
// Action plugins, async and tmp dirs

/// copy, template, fetch, script, slurp, async and tmp-dir cases writing
/// under `dest` (removed before each side runs: every case runs from the
/// same state on both sides). `fetch_to` is a controller dir.
fn action_cases(dest: &str, fetch_to: &str) -> Vec<Case> {
    let f = |p: &str| fixtures().join(p).display().to_string();
    let d = |p: &str| format!("{dest}/{p}");
    let vars = json!({"users": [{"name": "ann", "admin": true}, {"name": "bob"}],
                      "cfg": {"k": [1, "two"]}, "port": 8080});
    vec![
        case("tmp_dir", "tmpinfo", json!({})).register("tmpd"),
        case(
            "copy_content_new",
            "ansible.builtin.copy",
            json!({"content": "hello\n", "dest": d("c.txt")}),
        ),
        case(
            "copy_content_same",
            "ansible.builtin.copy",
            json!({"content": "hello\n", "dest": d("c.txt")}),
        ),
        case(
            "copy_content_check_diff",
            "ansible.builtin.copy",
            json!({"content": "changed\n", "dest": d("c.txt")}),
        )
        .check()
        .diff(),
        case(
            "copy_content_diff",
            "ansible.builtin.copy",
            json!({"content": "new text\n", "dest": d("c.txt"), "mode": "0640"}),
        )
        .diff(),
        case(
            "copy_content_no_log",
            "ansible.builtin.copy",
            json!({"content": "secret\n", "dest": d("secret.txt")}),
        )
        .no_log()
        .diff(),
        case(
            "copy_backup",
            "ansible.builtin.copy",
            json!({"content": "v2\n", "dest": d("c.txt"), "backup": true}),
        ),
        case(
            "copy_src_file",
            "ansible.builtin.copy",
            json!({"src": f("files/small.txt"), "dest": d("small.txt"), "mode": "0600"}),
        )
        .register("copied"),
        case(
            "copy_src_same_mode_change",
            "ansible.builtin.copy",
            json!({"src": f("files/small.txt"), "dest": d("small.txt"), "mode": "0644"}),
        ),
        case(
            "copy_src_into_dir",
            "ansible.builtin.copy",
            json!({"src": f("files/small.txt"), "dest": format!("{dest}/")}),
        ),
        case(
            "copy_tree",
            "ansible.builtin.copy",
            json!({"src": f("files/tree"), "dest": d("treecopy")}),
        ),
        case(
            "copy_tree_contents",
            "ansible.builtin.copy",
            json!({"src": format!("{}/", f("files/tree")), "dest": d("treecontents")}),
        ),
        case(
            "copy_remote_src",
            "ansible.builtin.copy",
            json!({"src": d("small.txt"), "dest": d("remote_copy.txt"), "remote_src": true}),
        ),
        case(
            "copy_missing_src",
            "ansible.builtin.copy",
            json!({"src": "/nonexistent-mtg-src", "dest": d("x")}),
        ),
        case(
            "copy_no_dest",
            "ansible.builtin.copy",
            json!({"content": "x"}),
        ),
        case(
            "copy_content_to_dir",
            "ansible.builtin.copy",
            json!({"content": "x", "dest": format!("{dest}/")}),
        ),
        case(
            "template_new",
            "ansible.builtin.template",
            json!({"src": f("templates/page.j2"), "dest": d("page.txt")}),
        )
        .vars(vars.clone())
        .diff(),
        case(
            "template_same",
            "ansible.builtin.template",
            json!({"src": f("templates/page.j2"), "dest": d("page.txt")}),
        )
        .vars(vars),
        case(
            "template_check",
            "ansible.builtin.template",
            json!({"src": f("templates/page.j2"), "dest": d("page2.txt"), "mode": "0600"}),
        )
        .vars(json!({"users": [], "cfg": null}))
        .check()
        .diff(),
        case(
            "slurp_file",
            "ansible.builtin.slurp",
            json!({"src": d("small.txt")}),
        ),
        case(
            "fetch_file",
            "ansible.builtin.fetch",
            json!({"src": d("small.txt"), "dest": fetch_to}),
        ),
        case(
            "fetch_same",
            "ansible.builtin.fetch",
            json!({"src": d("small.txt"), "dest": fetch_to}),
        ),
        case(
            "fetch_flat",
            "ansible.builtin.fetch",
            json!({"src": d("small.txt"), "dest": format!("{fetch_to}/flat/"), "flat": true}),
        ),
        case(
            "fetch_missing",
            "ansible.builtin.fetch",
            json!({"src": d("nope"), "dest": fetch_to}),
        ),
        case(
            "script_ok",
            "ansible.builtin.script",
            json!(format!("{} one 'two words'", f("files/script.sh"))),
        ),
        case(
            "script_rc",
            "ansible.builtin.script",
            json!({"cmd": f("files/script.sh"), "executable": "/bin/sh"}),
        )
        .env("MTG_RC", "3")
        .register("script_failed"),
        case(
            "script_creates",
            "ansible.builtin.script",
            json!({"cmd": f("files/script.sh"), "creates": "/"}),
        ),
        case(
            "script_check",
            "ansible.builtin.script",
            json!(f("files/script.sh")),
        )
        .check(),
        case(
            "async_poll",
            "ansible.builtin.command",
            json!({"cmd": "echo async-out"}),
        )
        .async_poll(20, 1),
        case(
            "async_poll_module",
            "ansible.builtin.ping",
            json!({"data": "async"}),
        )
        .async_poll(20, 1),
        case(
            "async_timeout",
            "ansible.builtin.command",
            json!({"cmd": "sleep 20"}),
        )
        .async_poll(2, 5),
        case(
            "async_fire",
            "ansible.builtin.shell",
            json!("echo fired; echo err >&2"),
        )
        .async_poll(30, 0)
        .register("job"),
        case("async_wait", "ansible.builtin.command", json!("sleep 2")),
        case(
            "async_status_done",
            "ansible.builtin.async_status",
            json!({"jid": "{{ job.ansible_job_id }}"}),
        )
        .register("job_done"),
        case(
            "async_status_cleanup",
            "ansible.builtin.async_status",
            json!({"jid": "{{ job.ansible_job_id }}", "mode": "cleanup"}),
        ),
        case(
            "async_status_gone",
            "ansible.builtin.async_status",
            json!({"jid": "{{ job.ansible_job_id }}"}),
        ),
        case(
            "async_unsupported",
            "ansible.builtin.copy",
            json!({"content": "x", "dest": d("async.txt")}),
        )
        .async_poll(10, 1),
    ]
}

/// Removes and remakes `dir` (world-writable: the test users write there).
fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Runs the action cases on one host with both sides and compares.
#[allow(clippy::too_many_arguments)]
fn compare_actions(
    py: &Path,
    scratch: &Path,
    inventory: &str,
    host: &str,
    runner: &Runner,
    target: &Target,
    cases: &[Case],
    home: Option<&Path>,
) {
    let dest = scratch.join("dest");
    let fetched = scratch.join("fetched");
    fresh_dir(&dest);
    fresh_dir(&fetched);
    let theirs = run_ansible_with(py, scratch, scratch, inventory, &[(host, cases)], home);
    fresh_dir(&dest);
    fresh_dir(&fetched);
    compare(runner, target, host, cases, &theirs);
}

fn actions_local() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("act-local");
    let dest = scratch.0.join("dest").display().to_string();
    let fetched = scratch.0.join("fetched").display().to_string();
    let cases = action_cases(&dest, &fetched);
    let r = router();
    let ctx = r.connect(&Local::new()).unwrap();
    let runner = Runner::new(source(&py, &scratch.0))
        .local_tmp(scratch.0.join("local-tmp"))
        .base_dir(&scratch.0);
    let target = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    // Local: ansible's async_wrapper finds jobs through $HOME, async_status
    // through `echo ~user`: give ansible the real home so they agree.
    let home = agent_home();
    compare_actions(
        &py,
        &scratch.0,
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
        "localhost",
        &runner,
        &target,
        &cases,
        Some(&home),
    );
}

fn agent_home() -> PathBuf {
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let pw = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    pw.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == uid.to_string())
        .map_or_else(|| PathBuf::from("/root"), |f| PathBuf::from(f[5]))
}

fn actions_ssh() {
    let Some(py) = venv_python() else { return };
    if !need_sshd() {
        return;
    }
    let scratch = Scratch::new("act-ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = scratch.0.join("dest").display().to_string();
    let fetched = scratch.0.join("fetched").display().to_string();
    let cases = action_cases(&dest, &fetched);
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let ctx = r.connect(&ssh_target(&sshd, "mtg-key")).unwrap();
    let runner = Runner::new(source(&py, &scratch.0))
        .local_tmp(scratch.0.join("local-tmp"))
        .base_dir(&scratch.0);
    let target = Target::new(&ctx, "h_key").connection(Connection::Ssh {
        host: sshd.host().to_owned(),
    });
    compare_actions(
        &py,
        &scratch.0,
        &ssh_inventory_line("h_key", &sshd, "mtg-key", ""),
        "h_key",
        &runner,
        &target,
        &cases,
        None,
    );
}

/// The become subset: transfers and async as root and as an unprivileged user.
fn become_action_cases(dest: &str, fetch_to: &str) -> Vec<Case> {
    let keep = [
        "tmp_dir",
        "copy_content_new",
        "copy_content_same",
        "copy_src_file",
        "template_new",
        "fetch_file",
        "script_ok",
        "async_poll",
        "async_fire",
        "async_wait",
        "async_status_done",
    ];
    action_cases(dest, fetch_to)
        .into_iter()
        .filter(|c| keep.contains(&c.name))
        .collect()
}

fn actions_become_ssh() {
    let Some(py) = venv_python() else { return };
    if !need_sshd() {
        return;
    }
    let scratch = Scratch::new("act-become");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = scratch.0.join("dest").display().to_string();
    let fetched = scratch.0.join("fetched").display().to_string();
    let cases = become_action_cases(&dest, &fetched);
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let via = r.connect(&ssh_target(&sshd, "mtg-sudo")).unwrap();
    let runner = Runner::new(source(&py, &scratch.0))
        .local_tmp(scratch.0.join("local-tmp"))
        .base_dir(&scratch.0);
    let ssh = Connection::Ssh {
        host: sshd.host().to_owned(),
    };
    let root = r.connect_via(&Sudo::new("root"), &via).unwrap();
    compare_actions(
        &py,
        &scratch.0,
        &ssh_inventory_line(
            "h_root",
            &sshd,
            "mtg-sudo",
            "ansible_become=true ansible_become_user=root",
        ),
        "h_root",
        &runner,
        &Target::new(&root, "h_root")
            .connection(ssh.clone())
            .become_from("mtg-sudo"),
        &cases,
        None,
    );
    // ansible-core gives an unprivileged become user its tmp files with
    // setfacl; without it every transfer fails there (by design).
    if !Path::new("/usr/bin/setfacl").exists() && !Path::new("/bin/setfacl").exists() {
        let why = "no setfacl for ansible-core's unprivileged become: apt-get install acl";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        skip(why);
        return;
    }
    let unpriv = r.connect_via(&Sudo::new("mtg-target"), &via).unwrap();
    compare_actions(
        &py,
        &scratch.0,
        &ssh_inventory_line(
            "h_unpriv",
            &sshd,
            "mtg-sudo",
            "ansible_become=true ansible_become_user=mtg-target",
        ),
        "h_unpriv",
        &runner,
        &Target::new(&unpriv, "h_unpriv")
            .connection(ssh)
            .become_from("mtg-sudo")
            .become_unprivileged(true),
        &cases,
        None,
    );
}

/// ansible-core's async_status reads jobs this runner started, and this
/// runner's reads ansible-core's, with the same results.
fn async_jobs_read_across_runners() {
    let Some(py) = venv_python() else { return };
    let scratch = Scratch::new("async-x");
    let home = agent_home();
    let inv = "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n";
    let r = router();
    let ctx = r.connect(&Local::new()).unwrap();
    let runner = Runner::new(source(&py, &scratch.0));
    let target = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    let status = |jid: &str| Task::new("ansible.builtin.async_status").args(json!({ "jid": jid }));
    // Theirs, read by ours.
    let theirs_cases = vec![
        case(
            "theirs_start",
            "ansible.builtin.shell",
            json!("echo theirs; echo e >&2"),
        )
        .async_poll(30, 0)
        .register("job"),
        Case {
            register: Some("w"),
            ansible_extra: Some(json!({"until": "w.finished", "retries": 30, "delay": 1})),
            ..case(
                "theirs_wait",
                "ansible.builtin.async_status",
                json!({"jid": "{{ job.ansible_job_id }}"}),
            )
        },
        case(
            "theirs_status",
            "ansible.builtin.async_status",
            json!({"jid": "{{ job.ansible_job_id }}"}),
        ),
    ];
    let theirs = run_ansible_with(
        &py,
        &scratch.0,
        &scratch.0,
        inv,
        &[("localhost", &theirs_cases)],
        Some(&home),
    );
    let jid = theirs[&("localhost".to_owned(), "theirs_start".to_owned())].1["ansible_job_id"]
        .as_str()
        .expect("ansible's job id")
        .to_owned();
    let theirs_jid = jid.clone();
    let ours = runner.run(target.clone(), &status(&jid)).unwrap();
    let want = &theirs[&("localhost".to_owned(), "theirs_status".to_owned())];
    let mut d = Vec::new();
    diff("", &ours.result, &want.1, &mut d);
    assert!(
        d.is_empty(),
        "our async_status of ansible's job differs: {d:?}"
    );
    assert_eq!(ours.result["finished"], true, "{}", ours.result);
    // Ours, read by theirs.
    let started = runner
        .run(
            target.clone(),
            &Task::new("ansible.builtin.shell")
                .args(json!("echo ours; echo e >&2"))
                .async_limit(30)
                .poll(0),
        )
        .unwrap();
    let jid = started.result["ansible_job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(30), || {
            runner.run(target.clone(), &status(&jid)).unwrap().result["finished"] == true
        }),
        "our job {jid} did not finish"
    );
    let ours = runner.run(target.clone(), &status(&jid)).unwrap();
    let read = [case(
        "read_ours",
        "ansible.builtin.async_status",
        json!({ "jid": jid }),
    )];
    let theirs = run_ansible_with(
        &py,
        &scratch.0,
        &scratch.0,
        inv,
        &[("localhost", &read)],
        Some(&home),
    );
    let mut d = Vec::new();
    diff(
        "",
        &ours.result,
        &theirs[&("localhost".to_owned(), "read_ours".to_owned())].1,
        &mut d,
    );
    assert!(
        d.is_empty(),
        "ansible's async_status of our job differs: {d:?}"
    );
    assert_eq!(ours.result["stdout"], "ours", "{}", ours.result);
    for j in [&jid, &theirs_jid] {
        let cleanup = Task::new("async_status").args(json!({"jid": j, "mode": "cleanup"}));
        let r = runner.run(target.clone(), &cleanup).unwrap();
        assert_eq!(r.status, Status::Ok, "{}", r.result);
    }
}

/// A task's tmp dir is gone after it, and kept (with
/// `_ansible_keep_remote_files`) under `keep_remote_files`.
fn tmp_dir_removed_unless_kept() {
    let Some((runner, _r, ctx)) = local_runner() else {
        return;
    };
    let t = Target::new(&ctx, "localhost").python_interpreter("/usr/bin/python3");
    let path_of = |r: &mitogen_ansible::TaskResult| {
        PathBuf::from(
            r.result["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{}", r.result)),
        )
    };
    let r = runner.run(t.clone(), &Task::new("tmpinfo")).unwrap();
    assert_eq!(r.result["mode"], "0700", "{}", r.result);
    assert_eq!(r.result["name_shape"], true, "{}", r.result);
    assert_eq!(r.result["keep_remote_files"], false, "{}", r.result);
    let p = path_of(&r);
    assert!(!p.exists(), "{} left behind", p.display());
    let r = runner
        .run(t.clone(), &Task::new("tmpinfo").keep_remote_files(true))
        .unwrap();
    let p = path_of(&r);
    assert_eq!(r.result["keep_remote_files"], true, "{}", r.result);
    assert!(p.is_dir(), "{} not kept", p.display());
    std::fs::remove_dir_all(&p).unwrap();
    // An action's own dir (copy's .source) goes too.
    let scratch = Scratch::new("tmp-copy");
    let r = runner
        .run(
            t,
            &Task::new("copy").args(json!({"content": "x", "dest": scratch.0.join("f")})),
        )
        .unwrap();
    let src = PathBuf::from(r.result["src"].as_str().unwrap());
    let dir = src.parent().unwrap();
    assert!(
        dir.display().to_string().contains("ansible-tmp-"),
        "{}",
        r.result
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}
