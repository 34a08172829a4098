//! How long `mitogen_ssh::connect_all` takes to many targets, and what the
//! controller holds per target (performance goal 3).
//!
//! Usage:
//! - `connect_many local [--n 1000] [--concurrency 32]`: N local agents
//!   through `connect_all`, and the same N one by one (the peer in the same
//!   run), each followed by one call per context.
//! - `connect_many ssh [--small 10] [--large 100] [--concurrency 100]`:
//!   targets that are host aliases (`-o HostName=`) of a throw-away loopback
//!   sshd, alternating with the sshd in network namespace `mtg-a` when it can
//!   be started; `--small` targets, then `--large`, in the same run, and the
//!   ratio of the two times. `--kex ALG` sets ssh's `KexAlgorithms` (the
//!   default, sntrup761x25519, is most of ssh's CPU per connection);
//!   `--multiplex` shares one master connection per host (all aliases of
//!   one sshd share it, as ssh keys the ControlPath by the real host name).
//!
//! Prints one JSON line per measurement.

use mitogen_benches::arg;
use mitogen_benches::{Pid, register};
use mitogen_core::{Context, Local, Router};
use mitogen_ssh::{Ssh, connect_all};
use mitogen_test_support::sshd::{NETNS_A, NETNS_A_ADDR, Sshd, netns_available, sshd_available};
use std::time::{Duration, Instant};

fn str_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// What one batch of connections took and held.
struct Batch {
    connect: Duration,
    call: Duration,
    rss_kib: f64,
    fds: f64,
    failed: usize,
}

/// Connects with `connect`, calls each context once, measures, then shuts
/// the contexts down (waiting until they are gone from the route table).
fn batch(
    router: &Router,
    n: usize,
    connect: impl FnOnce() -> Vec<Result<Context, mitogen_core::ConnectError>>,
) -> Batch {
    let (rss0, fds0) = (rss_kib(), fds());
    let t0 = Instant::now();
    let results = connect();
    let connect_took = t0.elapsed();
    let mut failed = 0;
    let mut ctxs = Vec::new();
    for r in results {
        match r {
            Ok(c) => ctxs.push(c),
            Err(e) => {
                if failed == 0 {
                    eprintln!("connect failed: {e}");
                }
                failed += 1;
            }
        }
    }
    let t1 = Instant::now();
    for c in &ctxs {
        if let Err(e) = c.call::<Pid>(&()) {
            eprintln!("call failed: {e}");
        }
    }
    let call = t1.elapsed();
    let (rss1, fds1) = (rss_kib(), fds());
    let ids: Vec<_> = ctxs.iter().map(Context::id).collect();
    for c in &ctxs {
        c.shutdown();
    }
    drop(ctxs);
    let until = Instant::now() + Duration::from_secs(30);
    while ids.iter().any(|id| router.is_connected(*id)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    Batch {
        connect: connect_took,
        call,
        rss_kib: rss1.saturating_sub(rss0) as f64 / n as f64,
        fds: fds1.saturating_sub(fds0) as f64 / n as f64,
        failed,
    }
}

fn print(mode: &str, n: usize, concurrency: usize, b: &Batch) {
    println!(
        "{{\"mode\":\"{mode}\",\"n\":{n},\"concurrency\":{concurrency},\"connect_s\":{:.3},\"calls_s\":{:.3},\"rss_kib_per_target\":{:.1},\"fds_per_target\":{:.2},\"failed\":{}}}",
        b.connect.as_secs_f64(),
        b.call.as_secs_f64(),
        b.rss_kib,
        b.fds,
        b.failed
    );
}

fn local(router: &Router) {
    let n = arg("--n", 1000);
    let conc = arg("--concurrency", 32);
    let methods: Vec<Local> = (0..n).map(|_| Local::new()).collect();
    let all = batch(router, n, || connect_all(router, &methods, conc));
    print("local connect_all", n, conc, &all);
    let one = batch(router, n, || {
        methods.iter().map(|m| router.connect(m)).collect()
    });
    print("local one by one", n, 1, &one);
    println!(
        "{{\"local_connect_all_vs_one_by_one\":{:.2}}}",
        one.connect.as_secs_f64() / all.connect.as_secs_f64()
    );
}

fn ssh(router: &Router) -> Result<(), Box<dyn std::error::Error>> {
    if !sshd_available() {
        return Err("sshd or the test users are missing: run scripts/test-hosts.sh setup".into());
    }
    let small = arg("--small", 10);
    let large = arg("--large", 100);
    let conc = arg("--concurrency", 100);
    let lo = Sshd::start("127.0.0.1", None)?;
    let ns = if netns_available() {
        match Sshd::start(NETNS_A_ADDR, Some(NETNS_A)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("no sshd in {NETNS_A} ({e}); loopback aliases only");
                None
            }
        }
    } else {
        None
    };
    let kex = str_arg("--kex");
    let multiplex = std::env::args().any(|a| a == "--multiplex");
    let method = |i: usize| {
        let sshd = match (&ns, i % 2) {
            (Some(ns), 1) => ns,
            _ => &lo,
        };
        let mut m = Ssh::new(&format!("target{i}"))
            .option("HostName", sshd.host())
            .port(sshd.port())
            .user("mtg-key")
            .identity_file(sshd.client_key())
            .known_hosts_file(sshd.known_hosts());
        if let Some(kex) = &kex {
            m = m.option("KexAlgorithms", kex);
        }
        if multiplex {
            m = m.multiplex(Duration::from_secs(30));
        }
        m
    };
    // Warm the agent cache on both hosts so every batch starts alike.
    let warm: Vec<Ssh> = (0..2).map(method).collect();
    let _ = batch(router, 2, || connect_all(router, &warm, 2));
    let mut times = Vec::new();
    for n in [small, large] {
        let methods: Vec<Ssh> = (0..n).map(method).collect();
        let b = batch(router, n, || connect_all(router, &methods, conc));
        print(
            if ns.is_some() {
                "ssh (loopback + netns)"
            } else {
                "ssh (loopback)"
            },
            n,
            conc,
            &b,
        );
        times.push(b.connect.as_secs_f64());
    }
    println!(
        "{{\"ssh_{large}_vs_{small}\":{:.2}}}",
        times[1] / times[0].max(1e-9)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(register)?;
    match std::env::args().nth(1).as_deref() {
        Some("local") => local(&router),
        Some("ssh") => ssh(&router)?,
        _ => return Err("usage: connect_many local|ssh [options]".into()),
    }
    router.shutdown();
    Ok(())
}
