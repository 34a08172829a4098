//! The README's main job: builds a small tree of contexts on this machine,
//! calls a typed function in each, shows their forwarded logs, and ends with
//! a latency summary.
//!
//! ```text
//! controller ─┬─ local.1 ── local.3   (started by local.1, routed through it)
//!             └─ local.2
//! ```
//!
//! Run: `cargo run --release -p mitogen-examples --bin tree`
//! (`-- --calls N` sets the number of timed calls per context).

use mitogen_core::{CallCx, Context, FnError, Function, Local, Registry};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What a context reports about itself.
#[derive(Debug, Serialize, Deserialize)]
struct HostInfo {
    context: String,
    pid: u32,
    user: String,
    hostname: String,
    uptime_secs: f64,
}

/// Reports the context's process, user, host and the host's uptime.
struct GetHostInfo;
impl Function for GetHostInfo {
    const NAME: &'static str = "examples::host_info";
    type Args = ();
    type Output = HostInfo;
    fn call(cx: &CallCx<'_>, (): ()) -> Result<HostInfo, FnError> {
        let uptime = std::fs::read_to_string("/proc/uptime")?;
        let uptime_secs = uptime.split_whitespace().next().unwrap_or("0").parse()?;
        let info = HostInfo {
            context: cx.router().name().to_owned(),
            pid: std::process::id(),
            user: mitogen_core::user_name(),
            hostname: mitogen_core::host_name(),
            uptime_secs,
        };
        log::info!(
            "{} (pid {}) answering a call from context {}",
            info.context,
            info.pid,
            cx.caller()
        );
        Ok(info)
    }
}

/// Does nothing: used to time round trips.
struct Ping;
impl Function for Ping {
    const NAME: &'static str = "examples::ping";
    type Args = ();
    type Output = ();
    fn call(_: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}

fn register(reg: &mut Registry) {
    reg.add::<GetHostInfo>().add::<Ping>();
}

/// Prints log records (including those forwarded from other contexts) to
/// stdout, in order with the rest of the output.
struct StderrLogger;
impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            println!("  log [{:<5} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Started as an agent by the controller below, this never returns.
    let router = mitogen_core::init(register)?;
    let _ = log::set_logger(&StderrLogger);
    log::set_max_level(log::LevelFilter::Info);
    let calls: usize = std::env::args()
        .skip_while(|a| a != "--calls")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    let t0 = Instant::now();
    let a = router.connect(&Local::new())?;
    let b = router.connect(&Local::new())?;
    let c = router.connect_via(&Local::new(), &a)?;
    println!(
        "started 3 contexts in {:.1} ms\n",
        t0.elapsed().as_secs_f64() * 1e3
    );

    let tree = [(&a, "child"), (&b, "child"), (&c, "grandchild via local.1")];
    println!(
        "{:<9} {:<24} {:>7}  {:<10} {:<16} {:>10}",
        "context", "role", "pid", "user", "host", "uptime"
    );
    for (ctx, role) in tree {
        let i = ctx.call::<GetHostInfo>(&())?;
        println!(
            "{:<9} {:<24} {:>7}  {:<10} {:<16} {:>9.0}s",
            i.context, role, i.pid, i.user, i.hostname, i.uptime_secs
        );
    }
    // Forwarded logs travel on the same streams as the replies: give the
    // controller's IO thread a moment to print the last ones.
    std::thread::sleep(Duration::from_millis(50));

    println!("\nround trips ({calls} calls of an empty function each):");
    for (ctx, _) in tree {
        summary(ctx, calls)?;
    }
    Ok(())
}

fn summary(ctx: &Context, calls: usize) -> Result<(), mitogen_core::CallError> {
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls.max(1) {
        let t = Instant::now();
        ctx.call::<Ping>(&())?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let pct = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1e6
    };
    println!(
        "  {:<9} median {:>7.1} us   p90 {:>7.1} us   p99 {:>7.1} us",
        ctx.name(),
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    Ok(())
}
