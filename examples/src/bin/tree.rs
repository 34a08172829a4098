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
//!
//! Over ssh and sudo instead (the same calls, in every context reached):
//!
//! ```text
//! tree --ssh [user@]host[:port] [--ssh host2 ...] [--via] [--sudo USER]
//!      [--identity KEY] [--known-hosts FILE] [--accept-new-host-keys]
//! ```
//! `--push FILE` pushes that file (default: this program's own binary) to
//! every context with a progress bar, then removes it again.
//! `--via` reaches each `--ssh` host through the one before it; `--sudo`
//! adds a sudo context under every ssh context (or under the controller
//! when there is no `--ssh`).

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
            user: mitogen_core::layer::user_name(),
            hostname: mitogen_core::layer::host_name(),
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

/// Removes a file the example pushed.
struct Remove;
impl Function for Remove {
    const NAME: &'static str = "examples::remove";
    type Args = String;
    type Output = ();
    fn call(_: &CallCx<'_>, path: String) -> Result<(), FnError> {
        std::fs::remove_file(&path)?;
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Creates the parent directory of a path.
struct MakeDir;
impl Function for MakeDir {
    const NAME: &'static str = "examples::make_dir";
    type Args = String;
    type Output = ();
    fn call(_: &CallCx<'_>, path: String) -> Result<(), FnError> {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }
}

fn register(reg: &mut Registry) {
    mitogen_ssh::register(reg);
    mitogen_service::register(reg);
    reg.add::<GetHostInfo>()
        .add::<Ping>()
        .add::<Remove>()
        .add::<MakeDir>();
}

/// Command-line options.
#[derive(Default)]
struct Args {
    calls: usize,
    ssh: Vec<String>,
    via: bool,
    sudo: Option<String>,
    identity: Option<String>,
    known_hosts: Option<String>,
    accept_new: bool,
    push: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 2000,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--calls" => {
                a.calls = value("--calls")?
                    .parse()
                    .map_err(|e| format!("--calls: {e}"))?
            }
            "--ssh" => a.ssh.push(value("--ssh")?),
            "--via" => a.via = true,
            "--sudo" => a.sudo = Some(value("--sudo")?),
            "--identity" => a.identity = Some(value("--identity")?),
            "--known-hosts" => a.known_hosts = Some(value("--known-hosts")?),
            "--accept-new-host-keys" => a.accept_new = true,
            "--push" => a.push = Some(value("--push")?),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the doc comment at the top of tree.rs)"
                ));
            }
        }
    }
    Ok(a)
}

/// The contexts to visit, each with its role.
fn build_tree(
    router: &mitogen_core::Router,
    args: &Args,
) -> Result<Vec<(Context, String)>, mitogen_core::ConnectError> {
    let mut tree = Vec::new();
    if args.ssh.is_empty() {
        let a = router.connect(&Local::new())?;
        let b = router.connect(&Local::new())?;
        let c = router.connect_via(&Local::new(), &a)?;
        tree.push((a, "child".to_owned()));
        tree.push((b, "child".to_owned()));
        tree.push((c, "grandchild via local.1".to_owned()));
        if let Some(user) = &args.sudo {
            let s = router.connect(&mitogen_ssh::Sudo::new(user))?;
            tree.push((s, format!("sudo {user}")));
        }
        return Ok(tree);
    }
    let mut prev: Option<Context> = None;
    for host in &args.ssh {
        let mut m = mitogen_ssh::Ssh::new(host);
        if let Some(k) = &args.identity {
            m = m.identity_file(k);
        }
        if let Some(f) = &args.known_hosts {
            m = m.known_hosts_file(f);
        }
        if args.accept_new {
            m = m.host_key_checking(mitogen_ssh::HostKeyChecking::AcceptNew);
        }
        let (ctx, role) = match (&prev, args.via) {
            (Some(p), true) => (
                router.connect_via(&m, p)?,
                format!("ssh {host} via {}", p.name()),
            ),
            _ => (router.connect(&m)?, format!("ssh {host}")),
        };
        if let Some(user) = &args.sudo {
            let s = router.connect_via(&mitogen_ssh::Sudo::new(user), &ctx)?;
            tree.push((s, format!("sudo {user} on {}", ctx.name())));
        }
        prev = Some(ctx.clone());
        tree.push((ctx, role));
    }
    Ok(tree)
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

fn main() {
    // Errors are printed as text with their causes, not in Debug form.
    if let Err(e) = run() {
        eprintln!("tree: error: {}", mitogen_core::error_chain(&*e));
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Started as an agent by the controller below, this never returns.
    let router = mitogen_core::init(register)?;
    let _ = log::set_logger(&StderrLogger);
    log::set_max_level(log::LevelFilter::Info);
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tree: {e}");
            std::process::exit(2);
        }
    };

    let t0 = Instant::now();
    let tree = build_tree(&router, &args)?;
    println!(
        "started {} contexts in {:.1} ms\n",
        tree.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );

    println!(
        "{:<16} {:<28} {:>7}  {:<10} {:<16} {:>10}",
        "context", "role", "pid", "user", "host", "uptime"
    );
    for (ctx, role) in &tree {
        let i = ctx.call::<GetHostInfo>(&())?;
        println!(
            "{:<16} {:<28} {:>7}  {:<10} {:<16} {:>9.0}s",
            i.context, role, i.pid, i.user, i.hostname, i.uptime_secs
        );
    }
    // Forwarded logs travel on the same streams as the replies: give the
    // controller's IO thread a moment to print the last ones.
    std::thread::sleep(Duration::from_millis(50));

    println!(
        "\nround trips ({} calls of an empty function each):",
        args.calls
    );
    for (ctx, _) in &tree {
        summary(ctx, args.calls)?;
    }

    let src = match &args.push {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()?,
    };
    let size = std::fs::metadata(&src)?.len();
    println!(
        "\npushing {} ({:.1} MiB) to every context:",
        src.display(),
        size as f64 / 1048576.0
    );
    for (ctx, _) in &tree {
        let dest = format!("/tmp/mitogen-rs-tree-{}/{}", std::process::id(), ctx.name());
        ctx.call::<MakeDir>(&dest)?;
        let t = Instant::now();
        mitogen_service::put_file(&router, ctx, &src, &dest, &Default::default(), |p| {
            bar(ctx.name(), p.done, p.total)
        })?;
        println!(
            "  {:.1} MiB/s",
            size as f64 / 1048576.0 / t.elapsed().as_secs_f64().max(1e-9)
        );
        ctx.call::<Remove>(&dest)?;
    }
    Ok(())
}

/// Draws a progress bar on the current line.
fn bar(name: &str, done: u64, total: u64) {
    use std::io::Write;
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((frac * 30.0).round() as usize).min(30);
    print!(
        "\r  {name:<16} [{}{}] {:>5.1}%",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        frac * 100.0
    );
    let _ = std::io::stdout().flush();
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
        "  {:<16} median {:>7.1} us   p90 {:>7.1} us   p99 {:>7.1} us",
        ctx.name(),
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    Ok(())
}
