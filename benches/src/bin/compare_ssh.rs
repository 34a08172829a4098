//! mitogen-rs over ssh, measured against plain OpenSSH on the same
//! throw-away sshd (127.0.0.1, user `mtg-key`; run `scripts/test-hosts.sh
//! setup` as root first). Prints one JSON line; `compare/run_ssh.sh` adds
//! Python Mitogen over the same sshd and prints ratios.
//!
//! Usage: `compare_ssh [--rtt-iters N] [--starts N] [--use-sshd PORT --key K --known-hosts F]`
//! (`--use-sshd` measures an sshd started elsewhere, e.g. by `--sshd-info`, so a
//! peer can be measured against the very same daemon; `--sshd-info`:
//! start the sshd, print its port, key and known_hosts, and wait for stdin
//! to close, so another program can use it).

use mitogen_benches::arg;
use mitogen_benches::{Noop, median_p99, round_trips};
use mitogen_core::transport::bootstrap::Bootstrap;
use mitogen_ssh::Ssh;
use mitogen_test_support::sshd::{Sshd, sshd_available};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "mtg-key";

/// The sshd under test: our own, or one named on the command line.
struct Target {
    port: u16,
    key: std::path::PathBuf,
    known_hosts: std::path::PathBuf,
    _own: Option<Sshd>,
}

impl Target {
    fn host(&self) -> &str {
        "127.0.0.1"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn client_key(&self) -> &std::path::Path {
        &self.key
    }
    fn known_hosts(&self) -> &std::path::Path {
        &self.known_hosts
    }
}

fn str_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn ssh_cmd(sshd: &Target) -> Command {
    let mut c = Command::new("ssh");
    c.args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "Compression=no",
    ])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        sshd.known_hosts().display()
    ))
    .arg("-i")
    .arg(sshd.client_key())
    .args([
        "-p",
        &sshd.port().to_string(),
        "-l",
        USER,
        "-T",
        sshd.host(),
    ]);
    c
}

fn method(sshd: &Target) -> Ssh {
    Ssh::new(sshd.host())
        .port(sshd.port())
        .user(USER)
        .identity_file(sshd.client_key())
        .known_hosts_file(sshd.known_hosts())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(mitogen_benches::register)?;
    if !sshd_available() {
        return Err(
            "sshd or the test users are missing: run scripts/test-hosts.sh setup as root".into(),
        );
    }
    let sshd = match (
        arg("--use-sshd", 0),
        str_arg("--key"),
        str_arg("--known-hosts"),
    ) {
        (0, _, _) => {
            let own = Sshd::start("127.0.0.1", None)?;
            if std::env::args().any(|a| a == "--sshd-info") {
                println!(
                    "{} {} {} {}",
                    own.port(),
                    USER,
                    own.client_key().display(),
                    own.known_hosts().display()
                );
                std::io::stdout().flush()?;
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                return Ok(());
            }
            Target {
                port: own.port(),
                key: own.client_key().to_owned(),
                known_hosts: own.known_hosts().to_owned(),
                _own: Some(own),
            }
        }
        (port, Some(key), Some(kh)) => Target {
            port: port as u16,
            key: key.into(),
            known_hosts: kh.into(),
            _own: None,
        },
        _ => return Err("--use-sshd needs --key and --known-hosts".into()),
    };
    let starts = arg("--starts", 10);
    let iters = arg("--rtt-iters", 2000);

    // `ssh host true`: the floor for any tool that starts over ssh.
    let ssh_true = median(
        (0..starts)
            .map(|_| {
                let t = Instant::now();
                let st = ssh_cmd(&sshd)
                    .arg("true")
                    .stdin(Stdio::null())
                    .status()
                    .expect("ssh runs");
                assert!(st.success(), "ssh true failed");
                t.elapsed()
            })
            .collect(),
    );

    // Time to first call with a cold cache (upload) and with a warm one.
    let cold = median(
        (0..3)
            .map(|i| {
                let dir = format!("/tmp/mitogen-rs-bench-cold-{}-{i}", std::process::id());
                let t = Instant::now();
                let ctx = router
                    .connect(&method(&sshd).bootstrap(Bootstrap::new().only_cache_dir(&dir)))
                    .expect("connect");
                ctx.call::<Noop>(&()).expect("call");
                let took = t.elapsed();
                assert!(!ctx.bootstrap_info().expect("info").cache_hit);
                ctx.shutdown_timeout(Duration::from_secs(5));
                let _ = std::fs::remove_dir_all(&dir);
                took
            })
            .collect(),
    );
    let warm_method = method(&sshd);
    router
        .connect(&warm_method)?
        .shutdown_timeout(Duration::from_secs(5));
    let warm = median(
        (0..starts)
            .map(|_| {
                let t = Instant::now();
                let ctx = router.connect(&warm_method).expect("connect");
                ctx.call::<Noop>(&()).expect("call");
                let took = t.elapsed();
                assert!(ctx.bootstrap_info().expect("info").cache_hit);
                ctx.shutdown_timeout(Duration::from_secs(5));
                took
            })
            .collect(),
    );

    // Call round trip over ssh, and a bare echo over a raw ssh channel.
    let ctx = router.connect(&warm_method)?;
    round_trips(&ctx, 0, 200);
    let (rtt, rtt_p99) = median_p99(&mut round_trips(&ctx, 0, iters));
    let mut cat = ssh_cmd(&sshd)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let (mut w, mut r) = (
        cat.stdin.take().ok_or("stdin")?,
        cat.stdout.take().ok_or("stdout")?,
    );
    let msg = [0x42u8; 40];
    let mut back = [0u8; 40];
    let mut echo = Vec::with_capacity(iters);
    for i in 0..iters + 200 {
        let t = Instant::now();
        w.write_all(&msg)?;
        r.read_exact(&mut back)?;
        if i >= 200 {
            echo.push(t.elapsed());
        }
    }
    drop(w);
    cat.wait()?;
    let (echo_med, _) = median_p99(&mut echo);
    println!(
        "{{\"impl\":\"mitogen-rs\",\"ssh_true_ms\":{},\"first_call_warm_ms\":{},\"first_call_cold_ms\":{},\"rtt_ssh_median_us\":{},\"rtt_ssh_p99_us\":{},\"raw_ssh_echo_median_us\":{}}}",
        ms(ssh_true),
        ms(warm),
        ms(cold),
        us(rtt),
        us(rtt_p99),
        us(echo_med)
    );
    Ok(())
}
