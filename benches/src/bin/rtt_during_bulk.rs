//! Small-call round trips on a link that also carries bulk data
//! (performance goal 4): the RTT distribution of `Noop` calls to a local
//! child, idle (the peer, same run) and while on the same link
//! (a) calls with a 127 MiB argument run back to back (small calls to the
//! same context, and to a context one hop behind it), and
//! (b) a FileService transfer runs (receiver discards, so the link, not the
//! disk, is the limit), and (c) the same to disk.
//!
//! Usage: `rtt_during_bulk [--secs S] [--arg-mib N] [--file-mib N]`.
//! Prints one JSON line per case: p50, p99 and max in µs, sample count, and
//! the bulk rate achieved meanwhile.

use mitogen_benches::arg;
use mitogen_benches::{EchoLen, Noop, register, round_trips};
use mitogen_core::{Blob, Context, Local, Router};
use mitogen_service::{WriteOptions, put_file};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Dist {
    p50: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
}

fn dist(mut v: Vec<Duration>) -> Dist {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Dist {
        p50: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
        n: v.len(),
    }
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn print(case: &str, d: &Dist, idle: Option<&Dist>, bulk_mib_s: f64) {
    let ratio = idle.map_or(String::new(), |i| {
        format!(
            ",\"p99_vs_idle\":{:.1}",
            d.p99.as_secs_f64() / i.p99.as_secs_f64().max(1e-9)
        )
    });
    println!(
        "{{\"case\":\"{case}\",\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"samples\":{},\"bulk_mib_s\":{bulk_mib_s:.1}{ratio}}}",
        us(d.p50),
        us(d.p99),
        us(d.max),
        d.n
    );
}

/// Samples small-call RTTs on `ctx` while `bulk` runs in another thread
/// (until `secs` pass); `bulk` returns how many bytes it moved.
fn during(
    ctx: &Context,
    secs: u64,
    bulk: impl FnOnce(Arc<AtomicBool>) -> u64 + Send + 'static,
) -> (Dist, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t0 = Instant::now();
    let worker = std::thread::spawn(move || bulk(stop2));
    // Let the bulk transfer get going before sampling.
    std::thread::sleep(Duration::from_millis(100));
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) && !worker.is_finished() {
        let t = Instant::now();
        if let Err(e) = ctx.call::<Noop>(&()) {
            eprintln!("noop failed: {e}");
            break;
        }
        samples.push(t.elapsed());
        std::thread::sleep(Duration::from_micros(500));
    }
    stop.store(true, Ordering::Relaxed);
    let bytes = worker.join().unwrap_or(0);
    let took = t0.elapsed().as_secs_f64();
    if samples.is_empty() {
        samples.push(Duration::ZERO);
    }
    (dist(samples), bytes as f64 / took / (1 << 20) as f64)
}

fn make_file(path: &Path, mib: u64) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_u32;
    for b in &mut chunk {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let mut f = std::fs::File::create(path)?;
    for _ in 0..mib {
        std::io::Write::write_all(&mut f, &chunk)?;
    }
    Ok(())
}

fn file_bulk(
    router: &Router,
    ctx: &Context,
    src: &Path,
    dest: String,
    opts: WriteOptions,
) -> impl FnOnce(Arc<AtomicBool>) -> u64 + Send + 'static {
    let (r, c, s) = (router.clone(), ctx.clone(), src.to_owned());
    move |stop| {
        let moved = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            match put_file(&r, &c, &s, &dest, &opts, |_| {}) {
                Ok(st) => moved.fetch_add(st.size, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("put_file failed: {e}");
                    break;
                }
            };
        }
        moved.into_inner()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(register)?;
    let secs = arg("--secs", 3);
    let arg_mib = arg("--arg-mib", 127);
    let file_mib = arg("--file-mib", 256);
    let ctx = router.connect(&Local::new())?;
    round_trips(&ctx, 0, 500);
    let idle = dist(round_trips(&ctx, 0, 3000));
    print("idle", &idle, None, 0.0);

    // (a) A 127 MiB call argument in flight, call after call.
    let big = Arc::new(Blob(vec![0xa5; (arg_mib << 20) as usize]));
    let c = ctx.clone();
    let (d, rate) = during(&ctx, secs, move |stop| {
        let mut moved = 0;
        while !stop.load(Ordering::Relaxed) {
            match c.call::<EchoLen>(&*big) {
                Ok(n) => moved += n,
                Err(e) => {
                    eprintln!("big call failed: {e}");
                    break;
                }
            }
        }
        moved
    });
    print(
        &format!("{arg_mib} MiB call argument, same context"),
        &d,
        Some(&idle),
        rate,
    );

    // (a') The same, small calls to a context behind the bulk's target: they
    // share the first link but not the destination.
    let leaf = router.connect_via(&Local::new(), &ctx)?;
    round_trips(&leaf, 0, 500);
    let idle_leaf = dist(round_trips(&leaf, 0, 3000));
    print("idle, one hop further", &idle_leaf, None, 0.0);
    let big = Arc::new(Blob(vec![0xa5; (arg_mib << 20) as usize]));
    let c = ctx.clone();
    let (d, rate) = during(&leaf, secs, move |stop| {
        let mut moved = 0;
        while !stop.load(Ordering::Relaxed) {
            match c.call::<EchoLen>(&*big) {
                Ok(n) => moved += n,
                Err(e) => {
                    eprintln!("big call failed: {e}");
                    break;
                }
            }
        }
        moved
    });
    print(
        &format!("{arg_mib} MiB call argument, calls one hop further"),
        &d,
        Some(&idle_leaf),
        rate,
    );

    // (b) A FileService transfer, receiver discarding; (c) to disk.
    let work = std::env::temp_dir().join(format!("mitogen-rtt-bulk-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let src = work.join("src");
    make_file(&src, file_mib)?;
    let discard = WriteOptions {
        discard: true,
        ..WriteOptions::default()
    };
    let (d, rate) = during(
        &ctx,
        secs,
        file_bulk(&router, &ctx, &src, "/unused".into(), discard),
    );
    print("file transfer, discard", &d, Some(&idle), rate);
    let dest = work.join("dst").display().to_string();
    let (d, rate) = during(
        &ctx,
        secs,
        file_bulk(&router, &ctx, &src, dest, WriteOptions::default()),
    );
    print("file transfer, to disk", &d, Some(&idle), rate);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
