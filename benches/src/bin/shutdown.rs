//! How long a controller with many local children takes to shut down, until
//! every child process is gone; and what it holds per child while they run.
//!
//! Usage: `shutdown [--children N]` (default 1000). Prints one JSON line.

use mitogen_benches::register;
use mitogen_core::Local;
use std::time::{Duration, Instant};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(register)?;
    let n: usize = mitogen_benches::arg("--children", 1000);
    let (rss0, fds0) = (rss_kib(), fds());
    let t0 = Instant::now();
    let mut pids = Vec::with_capacity(n);
    let mut ctxs = Vec::with_capacity(n);
    for _ in 0..n {
        let ctx = router.connect(&Local::new())?;
        pids.push(ctx.call::<mitogen_benches::Pid>(&())?);
        ctxs.push(ctx);
    }
    let connect = t0.elapsed();
    let (rss1, fds1) = (rss_kib(), fds());
    drop(ctxs);
    let t1 = Instant::now();
    router.shutdown();
    let returned = t1.elapsed();
    // Every child must be gone (reaped by the broker before shutdown returns).
    let gone = |pid: &u32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    while !pids.iter().all(gone) && t1.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let all_gone = t1.elapsed();
    let left = pids.iter().filter(|p| !gone(p)).count();
    println!(
        "{{\"children\":{n},\"connect_s\":{:.3},\"shutdown_returned_s\":{:.3},\"all_gone_s\":{:.3},\"left\":{left},\"rss_kib_per_child\":{:.1},\"fds_per_child\":{:.2}}}",
        connect.as_secs_f64(),
        returned.as_secs_f64(),
        all_gone.as_secs_f64(),
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        (fds1.saturating_sub(fds0)) as f64 / n as f64,
    );
    Ok(())
}
