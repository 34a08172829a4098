//! `mitogen-play`: runs Ansible playbooks over mitogen-rs, like
//! `ansible-playbook`.
//!
//! `mitogen-play --help` lists the options: ansible-playbook's, spelt
//! as it spells them (see `cli.rs`), and a few of its own (`--json`,
//! `--ansible-python`, `--no-multiplex`).
//!
//! `-k`, `-K` and `-J` (`--ask-vault-pass`) prompt on the terminal, as
//! ansible-playbook does; `--connection-password-file` and
//! `--become-password-file` read the password from a file instead.
//!
//! `MITOGEN_PLAY_LOG=debug` logs what the library does (to stderr).
//!
//! Exit codes as ansible-playbook: 0 ok, 1 error, 2 failed hosts (or a
//! command line argparse would refuse), 4 unreachable hosts or a parse
//! error, 5 bad options, 99 interrupted.

#![forbid(unsafe_code)]

mod cli;

use cli::{Args, PasswordFrom};
use mitogen_ansible::{ModuleSource, Runner, Status};
use mitogen_play::{
    Config, Event, Executor, Inventory, Options, ParseOptions, Play, load_playbook,
};
use serde_json::{Map, Value, json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// ansible-core's python: `--ansible-python`, `$MITOGEN_ANSIBLE_PYTHON`,
/// the interpreter of `ansible-playbook` in `PATH`, else `python3`.
fn find_python(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) =
        explicit.or_else(|| std::env::var_os("MITOGEN_ANSIBLE_PYTHON").map(PathBuf::from))
    {
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let ap = d.join("ansible-playbook");
            if let Ok(text) = std::fs::read_to_string(&ap) {
                if let Some(first) = text.lines().next().and_then(|l| l.strip_prefix("#!")) {
                    let py = first.split_whitespace().next().unwrap_or("");
                    if py.ends_with("python") || py.contains("python3") {
                        return PathBuf::from(py);
                    }
                }
                let py = d.join("python");
                if py.exists() {
                    return py;
                }
            }
        }
    }
    PathBuf::from("python3")
}

/// The terminal and its settings while a prompt has echo off, for the
/// signal thread to restore.
static PROMPTING: std::sync::Mutex<Option<(std::fs::File, rustix::termios::Termios)>> =
    std::sync::Mutex::new(None);

/// Asks for a secret on the terminal with echo off, as ansible-playbook's
/// prompts do: prompt and answer go through `/dev/tty`, so stdout and
/// stdin stay the caller's. Typed-ahead input is kept.
fn ask(prompt: &str) -> Result<String, String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::BufRead;
    let what = prompt.trim_end_matches([' ', ':']);
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            format!("{what}: no terminal to ask on (/dev/tty: {e}); give a password file instead")
        })?;
    let old = tcgetattr(&tty).map_err(|e| format!("{what}: /dev/tty: {e}"))?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    if let (Ok(mut p), Ok(dup)) = (PROMPTING.lock(), tty.try_clone()) {
        *p = Some((dup, old.clone()));
    }
    // Echo off before the prompt shows: an answer typed as soon as it
    // appears must not be echoed.
    tcsetattr(&tty, OptionalActions::Now, &quiet).map_err(|e| format!("{what}: /dev/tty: {e}"))?;
    let mut line = String::new();
    let read = (&tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    let _ = tcsetattr(&tty, OptionalActions::Now, &old);
    if let Ok(mut p) = PROMPTING.lock() {
        *p = None;
    }
    match read {
        Ok(0) => Err(format!("{what}: no answer (end of input)")),
        Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_owned()),
        Err(e) => Err(format!("{what}: /dev/tty: {e}")),
    }
}

/// `--connection-password-file` / `--become-password-file`, as
/// ansible-core reads them: `-` is stdin, an executable file is run for
/// its output, any other file is read; surrounding line ends (and, for a
/// plain file, white space) are dropped; an empty password is an error.
fn password_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let raw = if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| format!("password from stdin: {e}"))?;
        v
    } else {
        let meta = std::fs::metadata(path)
            .map_err(|_| format!("The password file {shown} was not found"))?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            let out = std::process::Command::new(path)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| {
                    format!(
                        "Problem occurred when trying to run the password script {shown} ({e})."
                    )
                })?;
            if !out.status.success() {
                return Err(format!(
                    "The password script {shown} returned an error (rc={}): {}",
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            out.stdout
        } else {
            let v = std::fs::read(path)
                .map_err(|e| format!("Could not read password file {shown}: {e}"))?;
            String::from_utf8_lossy(&v).trim().as_bytes().to_vec()
        }
    };
    let text = String::from_utf8_lossy(&raw)
        .trim_matches(['\n', '\r'])
        .to_owned();
    if text.is_empty() {
        return Err(format!("Empty password was provided from file ({shown})"));
    }
    Ok(text)
}

/// `--list-hosts`, `--list-tasks`, `--list-tags`, in ansible-playbook's
/// layout: per playbook, per play its number, hosts pattern, name and
/// tags; then its hosts, its tasks (after `--tags`/`--skip-tags`, with
/// their tags) or the tags of its tasks.
fn list(
    books: &[(&PathBuf, Vec<Play>)],
    inventory: &mut Inventory,
    opts: &Options,
    args: &Args,
) -> Result<(), String> {
    use mitogen_play::playbook::{Item, TaskDef};
    fn walk<'a>(items: &'a [Item], out: &mut Vec<&'a TaskDef>) {
        for i in items {
            match i {
                Item::Task(t) => out.push(t),
                // As ansible-playbook lists them: a block's tasks, not
                // its rescue or always.
                Item::Block(b) => walk(&b.block, out),
            }
        }
    }
    let join = |set: &std::collections::BTreeSet<String>, sep: &str| {
        set.iter().cloned().collect::<Vec<_>>().join(sep)
    };
    for (path, plays) in books {
        println!("\nplaybook: {}", path.display());
        for (n, p) in plays.iter().enumerate() {
            let play_tags: std::collections::BTreeSet<String> = p.kw.tags.iter().cloned().collect();
            let mut msg = format!(
                "\n  play #{} ({}): {}\tTAGS: [{}]",
                n + 1,
                p.hosts,
                p.name,
                join(&play_tags, ",")
            );
            if args.list_hosts {
                let hosts = inventory.matching(&p.hosts)?;
                let hosts: Vec<String> = match &opts.limit {
                    Some(l) => {
                        let allowed = inventory.matching(l)?;
                        hosts.into_iter().filter(|h| allowed.contains(h)).collect()
                    }
                    None => hosts,
                };
                msg += &format!(
                    "\n    pattern: ['{}']\n    hosts ({}):",
                    p.hosts,
                    hosts.len()
                );
                for h in hosts {
                    msg += &format!("\n      {h}");
                }
            }
            println!("{msg}");
            if !(args.list_tasks || args.list_tags) {
                continue;
            }
            let mut tasks = Vec::new();
            for section in &p.sections {
                walk(section, &mut tasks);
            }
            let mut out = String::new();
            if args.list_tasks {
                out += "    tasks:\n";
            }
            let mut all_tags = play_tags.clone();
            for t in tasks
                .iter()
                .filter(|t| !t.is_implicit() && opts.selects(&t.kw.tags))
            {
                all_tags.extend(t.kw.tags.iter().cloned());
                if args.list_tasks {
                    let mut tags = play_tags.clone();
                    tags.extend(t.kw.tags.iter().cloned());
                    let name = if t.name.is_some() {
                        t.list_name()
                    } else {
                        t.action.clone()
                    };
                    out += &format!("      {name}\tTAGS: [{}]\n", join(&tags, ", "));
                }
            }
            if args.list_tags {
                out += &format!("      TASK TAGS: [{}]\n", join(&all_tags, ", "));
            }
            // As Display.display: a message ending in a newline gets no other.
            print!("{out}");
        }
    }
    Ok(())
}

fn extra_vars(specs: &[String]) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for s in specs {
        let s = s.trim();
        if let Some(f) = s.strip_prefix('@') {
            let vars =
                mitogen_play::inventory::read_vars_file(Path::new(f)).map_err(|e| e.to_string())?;
            m.extend(vars);
        } else if s.starts_with('{') {
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(o)) => m.extend(o),
                _ => {
                    let n = mitogen_play::yaml::parse_one(s, Path::new("-e"))
                        .map_err(|e| e.to_string())?;
                    match n.to_json() {
                        Value::Object(o) => m.extend(o),
                        _ => return Err(format!("-e {s}: not a mapping")),
                    }
                }
            }
        } else {
            m.extend(mitogen_play::util::parse_kv(s, false).map_err(|e| format!("-e: {e}"))?);
        }
    }
    Ok(m)
}

fn banner(title: &str) -> String {
    let width = 80usize.saturating_sub(title.chars().count() + 1).max(3);
    format!("{title} {}", "*".repeat(width))
}

struct Printer {
    callback: mitogen_play::display::DefaultCallback,
    json: Option<std::io::BufWriter<std::fs::File>>,
    tty: bool,
    task_hosts: usize,
    done: usize,
    current_task: String,
    progress_shown: bool,
}

impl Printer {
    fn clear_progress(&mut self) {
        if self.progress_shown {
            eprint!("\r\x1b[2K");
            self.progress_shown = false;
        }
    }

    fn handle(&mut self, ev: &Event, play_hosts: &mut usize) {
        let out = &mut std::io::stdout().lock();
        match ev {
            Event::PlayStart { name, hosts } => {
                self.clear_progress();
                *play_hosts = hosts.len();
                let _ = writeln!(out, "\n{}", banner(&format!("PLAY [{name}]")));
                if hosts.is_empty() {
                    let _ = writeln!(out, "skipping: no hosts matched");
                }
            }
            Event::TaskStart { name, handler, .. } => {
                self.clear_progress();
                let kind = if *handler { "RUNNING HANDLER" } else { "TASK" };
                let _ = writeln!(out, "\n{}", banner(&format!("{kind} [{name}]")));
                self.current_task = name.clone();
                self.task_hosts = *play_hosts;
                self.done = 0;
            }
            Event::HostResult(r) => {
                self.clear_progress();
                let _ = self.callback.host_result(out, r);
                if let Some(j) = &mut self.json {
                    let rec = json!({
                        "host": r.host, "task": r.task, "action": r.action,
                        "status": match r.status { Status::Ok | Status::Changed => "ok", Status::Failed => "failed", Status::Skipped => "skipped", Status::Unreachable => "unreachable", _ => "other" },
                        "changed": r.changed, "ignored": r.ignored,
                        "duration": r.duration.as_secs_f64(), "result": r.result,
                    });
                    // Flushed per record: an interrupted run keeps
                    // every result it reported.
                    let _ = writeln!(j, "{rec}");
                    let _ = j.flush();
                }
                self.done += 1;
                if self.tty && self.task_hosts > 1 && self.done < self.task_hosts {
                    let _ = out.flush();
                    eprint!(
                        "\r\x1b[2K  [{}] {}/{} hosts done",
                        self.current_task, self.done, self.task_hosts
                    );
                    self.progress_shown = true;
                }
            }
            Event::Retry {
                host,
                task,
                retries_left,
            } => {
                self.clear_progress();
                let _ = writeln!(
                    out,
                    "FAILED - RETRYING: [{host}]: {task} ({retries_left} retries left)."
                );
            }
            Event::Included { file, hosts, item } => {
                self.clear_progress();
                let _ = match item {
                    Some(label) => writeln!(
                        out,
                        "included: {file} for {} => (item={label})",
                        hosts.join(", ")
                    ),
                    None => writeln!(out, "included: {file} for {}", hosts.join(", ")),
                };
            }
            Event::Warning(w) => {
                self.clear_progress();
                eprintln!("[WARNING]: {w}");
            }
            Event::Recap(stats) => {
                self.clear_progress();
                let _ = writeln!(out, "\n{}", banner("PLAY RECAP"));
                for (h, s) in stats {
                    let _ = writeln!(
                        out,
                        "{h:<26} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4} rescued={:<4} ignored={:<4}",
                        s.ok, s.changed, s.unreachable, s.failed, s.skipped, s.rescued, s.ignored
                    );
                }
                let _ = writeln!(out);
            }
            _ => {}
        }
    }
}

fn register(reg: &mut mitogen_core::Registry) {
    mitogen_ssh::register(reg);
    mitogen_ansible::register(reg);
}

/// Ctrl-C and SIGTERM, as ansible-playbook takes them: `signal-hook`'s
/// handler (processes we start get the default disposition back at
/// exec, so ssh, agents and modules see signals as usual) wakes one
/// thread, which ends the run: "User interrupted execution", exit 99 (143
/// for SIGTERM). What `--json` has
/// written stays (each record is flushed); the agents end with their
/// connections and take their tasks with them.
fn catch_interrupts() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
            // Interrupted at a password prompt: echo back on first.
            if let Some((tty, saved)) = PROMPTING.lock().ok().and_then(|mut p| p.take()) {
                let _ =
                    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &saved);
                eprintln!();
            }
            if std::io::stderr().is_terminal() {
                eprint!("\r\x1b[2K");
            }
            let _ = std::io::stdout().flush();
            if sig == SIGINT {
                eprintln!("\n[ERROR]: User interrupted execution");
                std::process::exit(99);
            }
            eprintln!("\n[ERROR]: Terminated");
            std::process::exit(143);
        });
}

fn main() -> ExitCode {
    if !mitogen_core::is_agent() {
        catch_interrupts();
    }
    // Same binary on both ends: as an agent this never returns.
    let router = match mitogen_core::init(register) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERROR! cannot start the router: {e}");
            return ExitCode::from(1);
        }
    };
    // With `MITOGEN_PLAY_LOG=LEVEL`, the library's records (the targets'
    // included) go to stderr; with `MITOGEN_RS_DUMP=SECONDS` too, every
    // context's periodic state dump.
    mitogen_core::log_to_stderr_from_env("MITOGEN_PLAY_LOG");
    let _ = mitogen_core::layer::raise_nofile_limit();
    let args = match cli::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ERROR! {e}");
            return ExitCode::from(5);
        }
    };
    if args.version {
        print_version(args.python);
        return ExitCode::SUCCESS;
    }
    match run(router, args) {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("ERROR! {msg}");
            ExitCode::from(code)
        }
    }
}

/// `--version`: ansible-playbook's text (ansible-core's own
/// `option_helpers.version`, from the Python modules come from) under
/// mitogen-play's name and version, with this program as the executable.
fn print_version(python: Option<PathBuf>) {
    let me = format!("mitogen-play {}", env!("CARGO_PKG_VERSION"));
    let python = find_python(python);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mitogen-play".into());
    let script = "import sys\nsys.argv[0] = sys.argv[2]\nfrom ansible.cli.arguments import option_helpers as o\nprint(o.version(sys.argv[1]))\n";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&me)
        .arg(&exe)
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        _ => println!(
            "{me}\n  ansible-core: not found under {} (pass --ansible-python or set MITOGEN_ANSIBLE_PYTHON)",
            python.display()
        ),
    }
}

fn run(router: mitogen_core::Router, args: Args) -> Result<u8, (u8, String)> {
    let cfg = Config::load().map_err(|e| (5, e.to_string()))?;
    for n in &cfg.notes {
        eprintln!("[NOTE]: {n}");
    }
    let python = find_python(args.python.clone());
    let mut source = ModuleSource::from_ansible_core(&python).map_err(|e| {
        (
            1,
            format!("{e} (pass --ansible-python or set MITOGEN_ANSIBLE_PYTHON)"),
        )
    })?;
    for d in args.module_path.iter().chain(&cfg.library) {
        source = source.library_dir(d);
    }
    for pb in &args.playbooks {
        if let Some(dir) = pb.parent() {
            let lib = dir.join("library");
            if lib.is_dir() {
                source = source.library_dir(lib);
            }
        }
    }
    // ansible-core's collection search order: next to the playbook, the
    // configured paths (default ~/.ansible/collections and
    // /usr/share/ansible/collections), then the Python's own sys.path
    // (the `ansible` package's collections in site-packages).
    let adjacent = args
        .playbooks
        .iter()
        .filter_map(|pb| pb.parent().map(|d| d.join("collections")))
        .filter(|d| d.join("ansible_collections").is_dir());
    let site = source
        .ansible_dir()
        .parent()
        .filter(|d| d.join("ansible_collections").is_dir())
        .map(Path::to_owned);
    let dirs: Vec<PathBuf> = adjacent
        .chain(cfg.collections_path.iter().cloned())
        .chain(site)
        .collect();
    for c in &dirs {
        source = source.collections_path(c);
    }
    let parse = ParseOptions {
        roles_path: cfg.roles_path.clone(),
        collections_paths: dirs,
        modules: Some(source.clone()),
        // Python plugins through ansible-core's loader, under the same
        // interpreter as the modules; started only if a template needs it.
        plugins: Some(Arc::new(
            mitogen_play::plugins::PluginHost::new(source.python()).playbook_dirs(
                args.playbooks
                    .iter()
                    .filter_map(|pb| std::path::absolute(pb).ok()?.parent().map(Path::to_owned))
                    .collect(),
            ),
        )),
    };
    // Passwords first, as ansible-playbook asks them: ssh, become, vault.
    let connection_password = match &args.connection_password {
        PasswordFrom::Nowhere if cfg.ask_pass => Some(ask("SSH password: ").map_err(|e| (1, e))?),
        PasswordFrom::Nowhere => None,
        PasswordFrom::Prompt => Some(ask("SSH password: ").map_err(|e| (1, e))?),
        PasswordFrom::File(f) => Some(password_file(f).map_err(|e| (1, e))?),
    };
    let become_password = match &args.become_password {
        PasswordFrom::Nowhere if !cfg.become_ask_pass => None,
        PasswordFrom::Nowhere | PasswordFrom::Prompt => match &connection_password {
            Some(ssh) => {
                let pw = ask("BECOME password[defaults to SSH password]: ").map_err(|e| (1, e))?;
                Some(if pw.is_empty() { ssh.clone() } else { pw })
            }
            None => Some(ask("BECOME password: ").map_err(|e| (1, e))?),
        },
        PasswordFrom::File(f) => Some(password_file(f).map_err(|e| (1, e))?),
    };
    // Vault secrets, as ansible-core collects them: --vault-id and
    // --vault-password-file in order (`prompt` as the file asks on the
    // terminal), then -J, then $ANSIBLE_VAULT_PASSWORD_FILE.
    let mut specs = args.vault.clone();
    if args.ask_vault_pass || cfg.ask_vault_pass {
        specs.push("@prompt".into());
    }
    if let Some(f) = std::env::var_os("ANSIBLE_VAULT_PASSWORD_FILE")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| cfg.vault_password_file.clone())
    {
        specs.push(format!("@{}", f.display()));
    }
    let mut secrets = Vec::new();
    for spec in &specs {
        let (id, file) = spec.split_once('@').unwrap_or(("", spec));
        if file == "prompt" {
            let id = if id.is_empty() { "default" } else { id };
            let text = if id == "default" {
                "Vault password: ".to_owned()
            } else {
                format!("Vault password ({id}): ")
            };
            let pw = ask(&text).map_err(|e| (1, e))?;
            secrets.push(mitogen_ansible::vault::Secret::new(id, pw.as_bytes()));
        } else {
            secrets.push(
                mitogen_ansible::vault::Secret::from_spec(spec).map_err(|e| (1, e.to_string()))?,
            );
        }
    }
    mitogen_ansible::vault::set_secrets(secrets);
    let mut books: Vec<(&PathBuf, Vec<Play>)> = Vec::new();
    for pb in &args.playbooks {
        books.push((
            pb,
            load_playbook(pb, &parse).map_err(|e| (4, e.to_string()))?,
        ));
    }
    let mut inv_src = args.inventory.clone();
    if inv_src.is_empty() {
        inv_src = cfg.inventory.clone();
    }
    let mut inventory = Inventory::new();
    for s in &inv_src {
        inventory.add_source(s).map_err(|e| (4, e.to_string()))?;
    }
    if inv_src.is_empty() {
        eprintln!("[WARNING]: No inventory was parsed, only implicit localhost is available");
    }
    if args.syntax_check {
        for pb in &args.playbooks {
            println!("\nplaybook: {}", pb.display());
        }
        return Ok(0);
    }
    let extra = extra_vars(&args.extra).map_err(|e| (5, e))?;
    let mut opts = Options::default();
    opts.forks = args
        .forks
        .or(cfg.forks)
        .unwrap_or(mitogen_play::DEFAULT_FORKS);
    opts.check = args.check;
    opts.diff = args.diff;
    opts.tags = args.tags.clone();
    opts.skip_tags = args.skip_tags.clone();
    opts.limit = args.limit.clone();
    opts.extra_vars = extra;
    // Command-line options beat ansible.cfg and lose to keywords and host
    // variables, as in ansible-playbook.
    opts.connect_timeout =
        std::time::Duration::from_secs(args.timeout.unwrap_or(cfg.timeout).max(30));
    opts.host_key_checking = cfg.host_key_checking;
    opts.multiplex = args.multiplex;
    opts.remote_user = args.remote_user.clone().or_else(|| cfg.remote_user.clone());
    opts.interpreter_python = cfg.interpreter_python.clone();
    opts.private_key_file = args
        .private_key
        .clone()
        .or_else(|| cfg.private_key_file.clone());
    opts.become_.enabled = args.become_ || cfg.become_;
    opts.become_.user = args
        .become_user
        .clone()
        .unwrap_or_else(|| cfg.become_user.clone());
    opts.become_.method = args
        .become_method
        .clone()
        .unwrap_or_else(|| cfg.become_method.clone());
    if !matches!(opts.become_.method.as_str(), "sudo" | "su" | "doas") {
        return Err((
            5,
            format!(
                "unsupported become method '{}' (supported: sudo, su, doas)",
                opts.become_.method
            ),
        ));
    }
    if let Some(c) = &args.connection {
        if !matches!(c.as_str(), "ssh" | "smart" | "local") {
            return Err((
                5,
                format!("unsupported connection '{c}' (supported: ssh, local)"),
            ));
        }
        opts.connection = if c == "smart" {
            "ssh".into()
        } else {
            c.clone()
        };
    }
    opts.connection_password = connection_password;
    opts.become_password = become_password;
    opts.pipelining = cfg.pipelining;
    opts.ssh_args = cfg
        .ssh_args
        .as_deref()
        .map(|s| mitogen_play::util::shlex_split(s).unwrap_or_default())
        .unwrap_or_default();
    opts.ssh_args.extend(args.ssh_args.iter().cloned());
    opts.gather_explicit = cfg.gathering == "explicit";
    opts.start_at_task = args.start_at_task.clone();
    opts.verbosity = args.verbose;
    // ansible-core's CLI: paths made absolute, host lists as given; with
    // none, its default source.
    opts.inventory_sources = if inv_src.is_empty() {
        vec!["/etc/ansible/hosts".into()]
    } else {
        inv_src
            .iter()
            .map(|s| match s.contains(',') {
                true => s.clone(),
                false => {
                    std::path::absolute(s).map_or_else(|_| s.clone(), |p| p.display().to_string())
                }
            })
            .collect()
    };
    opts.config_file = cfg.file.map(|p| std::path::absolute(&p).unwrap_or(p));
    if args.list_hosts || args.list_tasks || args.list_tags {
        list(&books, &mut inventory, &opts, &args).map_err(|e| (4, e))?;
        return Ok(0);
    }
    let plays: Vec<Play> = books.into_iter().flat_map(|(_, p)| p).collect();
    let json = match &args.json {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| (1, format!("{}: {e}", p.display())))?,
        )),
        None => None,
    };
    // Relative `src=` of copy/template/script is looked up from the
    // playbook's directory, as ansible-playbook does (the first playbook's,
    // when several are given).
    let mut runner = Runner::new(source);
    if let Some(dir) = args
        .playbooks
        .first()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        runner = runner.base_dir(dir);
    }
    let runner = Arc::new(runner);
    let exec = Executor::new(router, runner, inventory, opts).parse_options(parse);
    let rx = exec.subscribe();
    let mut printer = Printer {
        callback: mitogen_play::display::DefaultCallback::new(args.verbose),
        json,
        tty: std::io::stderr().is_terminal(),
        task_hosts: 0,
        done: 0,
        current_task: String::new(),
        progress_shown: false,
    };
    let printer_thread = std::thread::spawn(move || {
        let mut play_hosts = 0;
        for ev in rx {
            printer.handle(&ev, &mut play_hosts);
        }
        if let Some(j) = &mut printer.json {
            let _ = j.flush();
        }
    });
    let result = exec.run(&plays);
    drop(exec);
    let _ = printer_thread.join();
    let recap = result.map_err(|e| (4, e.to_string()))?;
    let unreachable = recap.iter().any(|(_, s)| s.unreachable > 0);
    let failed = recap.iter().any(|(_, s)| s.failed > 0);
    Ok(if unreachable {
        4
    } else if failed {
        2
    } else {
        0
    })
}
