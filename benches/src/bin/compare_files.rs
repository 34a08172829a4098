//! File transfer figures, in one run: mitogen-rs's file service over ssh
//! against `scp` and `ssh host 'cat >/dev/null'` on the same throw-away
//! sshd, over the local transport, call latency during a bulk transfer,
//! and a tree push to 8 targets against 8 direct pushes. Prints one JSON
//! line. Needs root and `scripts/test-hosts.sh setup`.
//!
//! Usage: `compare_files [--mib N] [--use-sshd PORT --key K --known-hosts F]`

use mitogen_benches::arg_str as arg;
use mitogen_benches::{Noop, median_p99, round_trips};
use mitogen_core::{Context, Local, Router};
use mitogen_service::{WriteOptions, push_file, put_file};
use mitogen_ssh::Ssh;
use mitogen_test_support::sshd::{Sshd, sshd_available};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "mtg-key";

fn ssh_opts(port: u16, key: &Path, kh: &Path) -> Vec<String> {
    vec![
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", kh.display()),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "Compression=no".into(),
        "-i".into(),
        key.display().to_string(),
    ]
    .into_iter()
    .chain(std::iter::once(format!("-oPort={port}")))
    .collect()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    (bytes as f64 / (1 << 20) as f64 / d.as_secs_f64() * 10.0).round() / 10.0
}

fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).status().expect("command runs");
    assert!(st.success(), "{cmd:?} failed");
    t.elapsed()
}

fn make_file(path: &Path, mib: usize) -> std::io::Result<()> {
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

fn put(router: &Router, ctx: &Context, src: &Path, dest: &str) -> Duration {
    put_with(router, ctx, src, dest, &WriteOptions::default())
}

fn put_with(
    router: &Router,
    ctx: &Context,
    src: &Path,
    dest: &str,
    opts: &WriteOptions,
) -> Duration {
    let t = Instant::now();
    put_file(router, ctx, src, dest, opts, |_| {}).expect("put_file");
    t.elapsed()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(mitogen_benches::register)?;
    mitogen_benches::log_from_env();
    if !sshd_available() {
        return Err("run scripts/test-hosts.sh setup as root first".into());
    }
    let mib: usize = arg("--mib").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let bytes = (mib as u64) << 20;
    let (_own, port, key, kh) = match (arg("--use-sshd"), arg("--key"), arg("--known-hosts")) {
        (Some(p), Some(k), Some(h)) => (None, p.parse()?, PathBuf::from(k), PathBuf::from(h)),
        _ => {
            let s = Sshd::start("127.0.0.1", None)?;
            let (p, k, h) = (
                s.port(),
                s.client_key().to_owned(),
                s.known_hosts().to_owned(),
            );
            (Some(s), p, k, h)
        }
    };
    let work = std::env::temp_dir().join(format!("mitogen-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let src = work.join("src");
    make_file(&src, mib)?;
    let remote = format!("/tmp/mitogen-bench-dst-{}", std::process::id());

    // Peers over the same sshd.
    let opts = ssh_opts(port, &key, &kh);
    let mut scp = Command::new("scp");
    scp.args(&opts)
        .arg("-q")
        .arg(&src)
        .arg(format!("{USER}@127.0.0.1:{remote}.scp"));
    let scp_t = timed(scp);
    let mut cat = Command::new("ssh");
    cat.args(&opts)
        .args(["-l", USER, "127.0.0.1", "cat >/dev/null"])
        .stdin(std::fs::File::open(&src)?);
    let cat_t = timed(cat);

    // mitogen-rs over ssh (agent already cached: the transfer is timed alone).
    let ssh = router.connect(
        &Ssh::new("127.0.0.1")
            .port(port)
            .user(USER)
            .identity_file(&key)
            .known_hosts_file(&kh),
    )?;
    let rs_ssh_t = put(&router, &ssh, &src, &format!("{remote}.rs"));
    let discard = WriteOptions {
        discard: true,
        ..WriteOptions::default()
    };
    let rs_ssh_null_t = put_with(&router, &ssh, &src, "/unused", &discard);
    let _ = Command::new("ssh")
        .args(&opts)
        .args([
            "-l",
            USER,
            "127.0.0.1",
            &format!("rm -f {remote}.scp {remote}.rs"),
        ])
        .status();

    // Local transport, and call latency while it runs.
    let local = router.connect(&Local::new())?;
    let local_dest = work.join("local-dst").display().to_string();
    let rs_local_t = put(&router, &local, &src, &local_dest);
    let rs_local_null_t = put_with(&router, &local, &src, "/unused", &discard);
    round_trips(&local, 0, 200);
    let (idle_med, idle_p99) = median_p99(&mut round_trips(&local, 0, 2000));
    let (r2, l2, s2, d2) = (router.clone(), local.clone(), src, local_dest);
    let bulk = std::thread::spawn(move || {
        let mut n = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            put(&r2, &l2, &s2, &d2);
            n += 1;
        }
        n
    });
    let mut busy = Vec::new();
    while !bulk.is_finished() {
        let t = Instant::now();
        local.call::<Noop>(&())?;
        busy.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = bulk.join();
    let (busy_med, busy_p99) = median_p99(&mut busy);

    // Tree push: 8 targets behind one intermediary, vs 8 direct transfers.
    let push_src = work.join("push-src");
    make_file(&push_src, 64)?;
    let i = router.connect(&Local::new())?;
    let targets: Vec<Context> = (0..8)
        .map(|_| router.connect_via(&Local::new(), &i))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for (k, r) in push_file(
        &router,
        &push_src,
        &work.join("pushed").display().to_string(),
        &targets,
        &WriteOptions::default(),
    )
    .into_iter()
    .enumerate()
    {
        r.map_err(|e| format!("push to target {k}: {e}"))?;
    }
    let push_t = t.elapsed();
    let t = Instant::now();
    for (k, tgt) in targets.iter().enumerate() {
        put(
            &router,
            tgt,
            &push_src,
            &work.join(format!("direct{k}")).display().to_string(),
        );
    }
    let direct_t = t.elapsed();
    let _ = std::fs::remove_dir_all(&work);
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    println!(
        "{{\"impl\":\"mitogen-rs\",\"mib\":{mib},\"scp_mib_s\":{},\"ssh_cat_mib_s\":{},\"rs_ssh_mib_s\":{},\"rs_ssh_discard_mib_s\":{},\"rs_local_mib_s\":{},\"rs_local_discard_mib_s\":{},\"rtt_idle_median_us\":{},\"rtt_idle_p99_us\":{},\"rtt_during_bulk_median_us\":{},\"rtt_during_bulk_p99_us\":{},\"push8_64mib_ms\":{},\"direct8_64mib_ms\":{}}}",
        mib_s(bytes, scp_t),
        mib_s(bytes, cat_t),
        mib_s(bytes, rs_ssh_t),
        mib_s(bytes, rs_ssh_null_t),
        mib_s(bytes, rs_local_t),
        mib_s(bytes, rs_local_null_t),
        us(idle_med),
        us(idle_p99),
        us(busy_med),
        us(busy_p99),
        push_t.as_millis(),
        direct_t.as_millis()
    );
    Ok(())
}
