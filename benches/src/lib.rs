//! Shared pieces of the mitogen-rs benchmarks: the functions the bench
//! agents run and the measurement loops, used by the Criterion benches
//! (`benches/core.rs`) and by `compare_local`, the side-by-side run against
//! Python Mitogen (`compare/run.sh`).

use mitogen_core::{Blob, CallCx, Context, FnError, Function, Registry, Sender};
use std::time::{Duration, Instant};

/// Registers the bench functions (both ends).
pub fn register(reg: &mut Registry) {
    mitogen_ssh::register(reg);
    mitogen_service::register(reg);
    reg.add::<Noop>()
        .add::<EchoLen>()
        .add::<BulkSink>()
        .add::<Pid>();
}

/// Returns the agent's process id.
#[derive(Debug)]
pub struct Pid;
impl Function for Pid {
    const NAME: &'static str = "bench::pid";
    type Args = ();
    type Output = u32;
    fn call(_: &CallCx<'_>, (): ()) -> Result<u32, FnError> {
        Ok(std::process::id())
    }
}

/// Does nothing: the empty round trip.
#[derive(Debug)]
pub struct Noop;
impl Function for Noop {
    const NAME: &'static str = "bench::noop";
    type Args = ();
    type Output = ();
    fn call(_: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}

/// Returns the length of its argument: the 4 KiB round trip.
#[derive(Debug)]
pub struct EchoLen;
impl Function for EchoLen {
    const NAME: &'static str = "bench::echo_len";
    type Args = Blob;
    type Output = u64;
    fn call(_: &CallCx<'_>, b: Blob) -> Result<u64, FnError> {
        Ok(b.len() as u64)
    }
}

/// Opens a receiver, sends its address to `reply`, then counts raw bytes
/// and messages until the sender closes it; returns both counts.
#[derive(Debug)]
pub struct BulkSink;
impl Function for BulkSink {
    const NAME: &'static str = "bench::bulk_sink";
    type Args = Sender;
    type Output = (u64, u64);
    fn call(cx: &CallCx<'_>, reply: Sender) -> Result<(u64, u64), FnError> {
        let rx = cx.router().receiver();
        reply.send(cx.router(), &rx.sender())?;
        let (mut bytes, mut msgs) = (0u64, 0u64);
        for msg in rx.iter() {
            bytes += msg.data.len() as u64;
            msgs += 1;
        }
        Ok((bytes, msgs))
    }
}

/// Times one call of `F` per sample; returns each round trip.
pub fn round_trips(ctx: &Context, payload: usize, n: usize) -> Vec<Duration> {
    let blob = Blob(vec![0xa5; payload]);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            if payload == 0 {
                ctx.call::<Noop>(&()).expect("noop call");
            } else {
                assert_eq!(
                    ctx.call::<EchoLen>(&blob).expect("echo call"),
                    payload as u64
                );
            }
            t.elapsed()
        })
        .collect()
}

/// Sends `total` bytes as `chunk`-byte raw messages to a [`BulkSink`] in
/// `ctx` and waits until it has counted them all. Returns the elapsed time.
pub fn bulk(ctx: &Context, chunk: usize, total: usize) -> Duration {
    let router = ctx.router();
    let addr = router.receiver();
    let pending = ctx
        .call_async::<BulkSink>(&addr.sender())
        .expect("start sink");
    let sink: Sender = addr
        .recv_value(Some(Instant::now() + Duration::from_secs(30)))
        .expect("sink address");
    let data = bytes::Bytes::from(vec![0x5a; chunk]);
    let t = Instant::now();
    let n = total.div_ceil(chunk);
    for _ in 0..n {
        sink.send_bytes(router, data.clone());
    }
    sink.close(router);
    let (bytes, msgs) = pending.wait().expect("sink result");
    let took = t.elapsed();
    assert_eq!(
        (bytes, msgs),
        ((n * chunk) as u64, n as u64),
        "every byte must arrive"
    );
    took
}

/// Median and 99th percentile (nearest rank) of `samples`.
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    (at(0.5), at(0.99))
}

/// Logs records (forwarded ones included) to stderr when
/// `MITOGEN_BENCH_LOG` is set to a level (`info`, `debug`, ...).
pub fn log_from_env() {
    mitogen_core::log_to_stderr_from_env("MITOGEN_BENCH_LOG");
}

/// The word after `name` on the command line (`--mib 64`).
pub fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The value after `name` on the command line, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
