//! Per-task cost of `ping`, `command`, `stat` and `copy` (a small file)
//! through this runner, ansible-playbook (ssh + pipelining) and
//! ansible-playbook with Python Mitogen 0.3.54's `mitogen_linear`, all
//! against the same throw-away loopback sshd and user (`mtg-key`, from
//! `scripts/test-hosts.sh setup`; run as root). Prints marginal ms per task,
//! ratios, and where this runner's time goes. Used by
//! `benches/compare/ansible.sh`.
//!
//! `ansible_bench VENV_PYTHON N [MODULE...]`
//!
//! Marginal cost: ours is timed after a warm-up task (connection, payload
//! and fork server ready); ansible-playbook runs twice, with 1 and with
//! N+1 tasks, and the difference is divided by N (startup and connection
//! cancel out).
use mitogen_ansible::{Connection, ModuleSource, Runner, Status, Target, Task, Timings};
use mitogen_test_support::sshd::Sshd;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

const USER: &str = "mtg-key";
const PYTHON: &str = "/usr/bin/python3";

/// The module arguments of task `i` (copy writes a new file each time).
fn args(module: &str, i: usize, small: &Path, dest: &Path) -> Value {
    match module {
        "ping" => json!({}),
        "command" => json!({"cmd": "true"}),
        "stat" => json!({"path": "/etc/hostname"}),
        "copy" => json!({"src": small, "dest": dest.join(format!("f{i}"))}),
        other => panic!("no bench for {other}"),
    }
}

fn ours(
    runner: &Runner,
    target: &Target,
    module: &str,
    n: usize,
    small: &Path,
    dest: &Path,
) -> Result<(f64, Timings), BoxError> {
    let task =
        |i| Task::new(&format!("ansible.builtin.{module}")).args(args(module, i, small, dest));
    runner.run(target.clone(), &task(n + 1))?;
    let mut sum = Timings::default();
    let t0 = Instant::now();
    for i in 0..n {
        let r = runner.run(target.clone(), &task(i))?;
        assert!(
            matches!(r.status, Status::Ok | Status::Changed),
            "{module}: {}",
            r.result
        );
        let t = r.timings;
        sum.calls += t.calls;
        sum.round_trips += t.round_trips;
        sum.agent += t.agent;
        sum.module += t.module;
        sum.total += t.total;
    }
    Ok((t0.elapsed().as_secs_f64() * 1000.0 / n as f64, sum))
}

struct Ansible {
    bin: PathBuf,
    work: PathBuf,
    inventory: PathBuf,
}

impl Ansible {
    /// Seconds for a playbook of `tasks` tasks of `module`.
    fn time(
        &self,
        module: &str,
        tasks: usize,
        mitogen: Option<&Path>,
        small: &Path,
        dest: &Path,
        verbose: bool,
    ) -> Result<(f64, String), BoxError> {
        let list: Vec<Value> = (0..tasks)
            .map(|i| json!({ format!("ansible.builtin.{module}"): args(module, i, small, dest) }))
            .collect();
        let pb = self.work.join("pb.json");
        std::fs::write(
            &pb,
            serde_json::to_vec(&json!([{"hosts": "all", "gather_facts": false, "tasks": list}]))?,
        )?;
        let mut cmd = Command::new(self.bin.join("ansible-playbook"));
        cmd.arg("-i").arg(&self.inventory).arg(&pb);
        if verbose {
            cmd.arg("-vvv");
        }
        cmd.env("HOME", &self.work)
            .env("ANSIBLE_LOCAL_TEMP", self.work.join("lt"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.work.join("cp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PIPELINING", "True")
            .stdin(std::process::Stdio::null());
        if let Some(m) = mitogen {
            cmd.env("ANSIBLE_STRATEGY_PLUGINS", m.join("plugins/strategy"))
                .env("ANSIBLE_STRATEGY", "mitogen_linear");
        }
        let t0 = Instant::now();
        let out = cmd.output()?;
        let secs = t0.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("ansible-playbook failed:\n{text}").into());
        }
        Ok((secs, text))
    }

    /// Marginal ms per task: (T(n+1) - T(1)) / n.
    fn marginal(
        &self,
        module: &str,
        n: usize,
        mitogen: Option<&Path>,
        small: &Path,
        dest: &Path,
    ) -> Result<f64, BoxError> {
        fresh(dest)?;
        let (one, _) = self.time(module, 1, mitogen, small, dest, false)?;
        fresh(dest)?;
        let (many, _) = self.time(module, n + 1, mitogen, small, dest, false)?;
        Ok((many - one) * 1000.0 / n as f64)
    }
}

fn fresh(dir: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
}

fn ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n as f64
}

fn main() -> Result<(), BoxError> {
    let router = mitogen_core::init(|reg| {
        mitogen_ssh::register(reg);
        mitogen_ansible::register(reg);
    })?;
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        return Err("usage: ansible_bench VENV_PYTHON N [MODULE...]".into());
    }
    let (python, n) = (PathBuf::from(&a[1]), a[2].parse::<usize>()?);
    let modules: Vec<&str> = if a.len() > 3 {
        a[3..].iter().map(String::as_str).collect()
    } else {
        vec!["ping", "command", "stat", "copy"]
    };
    let bin = python.parent().ok_or("bad python path")?.to_owned();
    let work = std::env::temp_dir().join(format!("mtg-ans-bench-{}", std::process::id()));
    fresh(&work)?;
    let small = work.join("small.txt");
    std::fs::write(&small, "a small file\n")?;
    let dest = work.join("dest");

    let sshd = Sshd::start("127.0.0.1", None)?;
    let inventory = work.join("inventory");
    std::fs::write(
        &inventory,
        format!(
            "bench ansible_host={} ansible_port={} ansible_user={USER} ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={} -o IdentitiesOnly=yes' ansible_python_interpreter={PYTHON}\n",
            sshd.host(),
            sshd.port(),
            sshd.client_key().display(),
            sshd.known_hosts().display()
        ),
    )?;
    let ansible = Ansible {
        bin,
        work: work.clone(),
        inventory,
    };
    let mitogen_dir = Command::new(&python)
        .args([
            "-c",
            "import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    // Is Mitogen really in charge? Its strategy replaces the ssh connection
    // plugin: plain runs say "ESTABLISH SSH CONNECTION", Mitogen's do not.
    let mitogen = match &mitogen_dir {
        Some(m) => {
            fresh(&dest)?;
            let (_, text) = ansible.time("ping", 1, Some(m), &small, &dest, true)?;
            let loaded = text.contains("strategy plugins not included in ansible.builtin");
            let plain_ssh = text.contains("ESTABLISH SSH CONNECTION");
            if loaded && !plain_ssh {
                println!(
                    "mitogen_linear: active (third-party strategy loaded, no ansible ssh connection made)"
                );
                Some(m.clone())
            } else {
                println!(
                    "mitogen_linear: NOT active (loaded={loaded}, plain ssh={plain_ssh}): skipped"
                );
                None
            }
        }
        None => {
            println!("ansible_mitogen not installed in the venv: Mitogen column skipped");
            None
        }
    };

    let ctx = router.connect(
        &mitogen_ssh::Ssh::new(sshd.host())
            .port(sshd.port())
            .user(USER)
            .identity_file(sshd.client_key())
            .known_hosts_file(sshd.known_hosts())
            .connect_timeout(Duration::from_secs(20)),
    )?;
    let runner = Runner::new(ModuleSource::from_ansible_core(&python)?);
    let target = Target::new(&ctx, "bench")
        .connection(Connection::Ssh {
            host: sshd.host().to_owned(),
        })
        .python_interpreter(PYTHON);

    println!(
        "tasks: {n} per module and runner, ssh to {USER}@{}:{}",
        sshd.host(),
        sshd.port()
    );
    println!(
        "{:<8} {:>12} {:>14} {:>8} {:>14} {:>8}",
        "module", "ours ms/task", "pipelined ms", "ratio", "mitogen ms", "ratio"
    );
    let mut splits = Vec::new();
    for m in &modules {
        fresh(&dest)?;
        let (o, t) = ours(&runner, &target, m, n, &small, &dest)?;
        // BENCH_OURS_ONLY=1: this runner's column and split only.
        let only_ours = std::env::var_os("BENCH_OURS_ONLY").is_some();
        let p = if only_ours {
            f64::NAN
        } else {
            ansible.marginal(m, n, None, &small, &dest)?
        };
        let mi = match &mitogen {
            Some(dir) if !only_ours => Some(ansible.marginal(m, n, Some(dir), &small, &dest)?),
            _ => None,
        };
        println!(
            "{:<8} {:>12.2} {:>14.2} {:>7.1}x {:>14} {:>8}",
            m,
            o,
            p,
            p / o,
            mi.map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
            mi.map_or_else(|| "n/a".into(), |v| format!("{:.1}x", v / o)),
        );
        splits.push((m.to_string(), o, t));
    }
    println!("\nwhere this runner's time goes, per task (ms):");
    println!(
        "{:<8} {:>8} {:>12} {:>10} {:>14} {:>14} {:>16}",
        "module",
        "total",
        "round trips",
        "in calls",
        "agent (calls)",
        "module (fork)",
        "controller-only"
    );
    for (m, o, t) in splits {
        let calls = ms(t.calls, n);
        println!(
            "{:<8} {:>8.2} {:>12.1} {:>10.2} {:>14.2} {:>14.2} {:>16.2}",
            m,
            o,
            f64::from(t.round_trips) / n as f64,
            calls,
            ms(t.agent, n),
            ms(t.module, n),
            ms(t.total, n) - calls,
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
