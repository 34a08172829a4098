//! Prints one JSON line with mitogen-rs's local-transport figures, in the
//! same shape as `compare/py_mitogen_bench.py` prints Python Mitogen's.
//!
//! Usage: `compare_local [--rtt-iters N] [--bulk-mib M] [--warmup W]`

use mitogen_benches::{bulk, median_p99, register, round_trips};
use mitogen_core::Local;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{name}=")))
                .map(|_| &args[0])
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(register)?;
    let args: Vec<String> = std::env::args().collect();
    let iters = arg(&args, "--rtt-iters", 5000);
    let mib = arg(&args, "--bulk-mib", 256);
    let warmup = arg(&args, "--warmup", 200);
    let ctx = router.connect(&Local::new())?;
    round_trips(&ctx, 0, warmup);
    let (e_med, e_p99) = median_p99(&mut round_trips(&ctx, 0, iters));
    round_trips(&ctx, 4096, warmup);
    let (k_med, k_p99) = median_p99(&mut round_trips(&ctx, 4096, iters));
    bulk(&ctx, 1 << 20, 8 << 20);
    let took = bulk(&ctx, 1 << 20, mib << 20);
    let us = |d: std::time::Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    println!(
        "{{\"impl\":\"mitogen-rs\",\"version\":\"{}\",\"rtt_empty_median_us\":{},\"rtt_empty_p99_us\":{},\"rtt_4k_median_us\":{},\"rtt_4k_p99_us\":{},\"bulk_mib_s\":{:.1}}}",
        env!("CARGO_PKG_VERSION"),
        us(e_med),
        us(e_p99),
        us(k_med),
        us(k_p99),
        mib as f64 / took.as_secs_f64()
    );
    Ok(())
}
