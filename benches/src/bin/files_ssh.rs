//! Files over ssh against OpenSSH on the same throw-away sshd, in rounds
//! (performance goal 5): each round times `scp` (to disk), mitogen-rs to
//! disk, `ssh host 'cat >/dev/null'` and mitogen-rs discarding, back to
//! back, and prints the two ratios of that round, so every round compares
//! against peers measured seconds apart. Needs root and
//! `scripts/test-hosts.sh setup`.
//!
//! With each round, the CPU seconds per GiB each party used (from /proc):
//! for mitogen-rs this process, its ssh, the sshd session process and the
//! agent; for `ssh cat` the ssh client and everything the sshd listener
//! reaped (sshd and cat).
//!
//! Usage: `files_ssh [--mib N] [--rounds R] [--only discard|disk]`
//! (`--only` runs just that mitogen-rs transfer, R times: for profiling).

use mitogen_benches::arg_str as arg;
use mitogen_core::{Context, Router};
use mitogen_service::{WriteOptions, put_file};
use mitogen_ssh::Ssh;
use mitogen_test_support::sshd::{Sshd, sshd_available};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "mtg-key";

fn mib_s(bytes: u64, d: Duration) -> f64 {
    (bytes as f64 / (1 << 20) as f64 / d.as_secs_f64() * 10.0).round() / 10.0
}

fn timed(mut cmd: Command) -> Result<Duration, String> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !st.success() {
        return Err(format!("{cmd:?} failed: {st}"));
    }
    Ok(t.elapsed())
}

/// (own, waited-for children's) CPU seconds of process `pid`.
fn cpu(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |p| p.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    // utime, stime, cutime, cstime are fields 14..17: 11..14 after the name.
    (at(11) + at(12), at(13) + at(14))
}

fn ppid(pid: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |p| p.1);
    rest.split_whitespace().nth(1).unwrap_or("0").to_owned()
}

/// CPU seconds of each party in a transfer, from /proc: this process,
/// its ssh, and on the target side the sshd session process and the agent.
#[derive(Clone, Copy, Default)]
struct Cpu {
    controller: f64,
    ssh: f64,
    sshd: f64,
    agent: f64,
}

impl Cpu {
    fn now(ssh: &str, sshd: &str, agent: &str) -> Self {
        Self {
            controller: cpu("self").0,
            ssh: cpu(ssh).0,
            sshd: cpu(sshd).0,
            agent: cpu(agent).0,
        }
    }

    fn since(self, before: Self, gib: f64) -> String {
        format!(
            "{{\"controller\":{:.2},\"ssh\":{:.2},\"sshd\":{:.2},\"agent\":{:.2}}}",
            (self.controller - before.controller) / gib,
            (self.ssh - before.ssh) / gib,
            (self.sshd - before.sshd) / gib,
            (self.agent - before.agent) / gib,
        )
    }
}

/// The pid of this process's child named `ssh`.
fn ssh_child() -> String {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|p| {
            ppid(p) == me
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "ssh")
        })
        .unwrap_or_else(|| "0".into())
}

fn make_file(path: &Path, mib: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        std::io::Write::write_all(&mut f, &buf)?;
    }
    f.sync_all()
}

fn put(
    router: &Router,
    ctx: &Context,
    src: &Path,
    dest: &str,
    discard: bool,
) -> Result<Duration, String> {
    let opts = WriteOptions {
        discard,
        ..WriteOptions::default()
    };
    let t = Instant::now();
    put_file(router, ctx, src, dest, &opts, |_| {}).map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(mitogen_benches::register)?;
    if !sshd_available() {
        return Err("run scripts/test-hosts.sh setup as root first".into());
    }
    let mib: u64 = arg("--mib").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let only = arg("--only");
    let bytes = mib << 20;
    let sshd = Sshd::start("127.0.0.1", None)?;
    let work = std::env::temp_dir().join(format!("mitogen-files-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let src = work.join("src");
    make_file(&src, mib)?;
    let remote = format!("/tmp/mitogen-files-ssh-dst-{}", std::process::id());
    // Options common to ssh and scp (which spells the port -P).
    let mut common: Vec<std::ffi::OsString> = vec!["-o".into(), "Compression=no".into()];
    common.extend(
        sshd.ssh_args()
            .into_iter()
            .take_while(|o| o.to_str() != Some("-p")),
    );
    let port = sshd.port().to_string();
    let ctx = router.connect(
        &Ssh::new("127.0.0.1")
            .port(sshd.port())
            .user(USER)
            .identity_file(sshd.client_key())
            .known_hosts_file(sshd.known_hosts()),
    )?;
    // Warm the page cache and both paths once.
    put(&router, &ctx, &src, "/unused", true)?;
    let agent = ctx.call::<mitogen_benches::Pid>(&())?.to_string();
    let (ssh_pid, sshd_pid) = (ssh_child(), ppid(&agent));
    let listener = sshd.pid().unwrap_or(0).to_string();
    let gib = mib as f64 / 1024.0;
    if let Some(which) = only {
        for _ in 0..rounds {
            let t = put(
                &router,
                &ctx,
                &src,
                &format!("{remote}.rs"),
                which == "discard",
            )?;
            println!("{{\"only\":\"{which}\",\"mib_s\":{}}}", mib_s(bytes, t));
        }
        let _ = std::fs::remove_dir_all(&work);
        return Ok(());
    }
    for round in 1..=rounds {
        let mut scp = Command::new("scp");
        scp.args(&common)
            .args(["-P", &port, "-q"])
            .arg(&src)
            .arg(format!("{USER}@127.0.0.1:{remote}.scp"));
        let scp_t = timed(scp)?;
        let c0 = Cpu::now(&ssh_pid, &sshd_pid, &agent);
        let rs_disk = put(&router, &ctx, &src, &format!("{remote}.rs"), false)?;
        let cpu_disk = Cpu::now(&ssh_pid, &sshd_pid, &agent).since(c0, gib);
        let (kids0, served0) = (cpu("self").1, cpu(&listener).1);
        let mut cat = Command::new("ssh");
        cat.args(&common)
            .args(["-p", &port, "-l", USER, "127.0.0.1", "cat >/dev/null"])
            .stdin(std::fs::File::open(&src)?);
        let cat_t = timed(cat)?;
        let cpu_cat = format!(
            "{{\"ssh\":{:.2},\"sshd_and_cat\":{:.2}}}",
            (cpu("self").1 - kids0) / gib,
            (cpu(&listener).1 - served0) / gib
        );
        let c0 = Cpu::now(&ssh_pid, &sshd_pid, &agent);
        let rs_null = put(&router, &ctx, &src, "/unused", true)?;
        let cpu_null = Cpu::now(&ssh_pid, &sshd_pid, &agent).since(c0, gib);
        let _ = std::fs::remove_file(format!("{remote}.scp"));
        let _ = std::fs::remove_file(format!("{remote}.rs"));
        println!(
            "{{\"round\":{round},\"mib\":{mib},\"scp_mib_s\":{},\"rs_disk_mib_s\":{},\"disk_vs_scp\":{:.2},\"ssh_cat_mib_s\":{},\"rs_discard_mib_s\":{},\"discard_vs_cat\":{:.2},\"cpu_s_per_gib\":{{\"rs_disk\":{cpu_disk},\"cat\":{cpu_cat},\"rs_discard\":{cpu_null}}}}}",
            mib_s(bytes, scp_t),
            mib_s(bytes, rs_disk),
            scp_t.as_secs_f64() / rs_disk.as_secs_f64(),
            mib_s(bytes, cat_t),
            mib_s(bytes, rs_null),
            cat_t.as_secs_f64() / rs_null.as_secs_f64(),
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
