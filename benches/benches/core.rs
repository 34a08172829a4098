//! Criterion benches: codec, call round trip and bulk throughput over the
//! local transport. This binary is also the bench agent.

use criterion::{BenchmarkId, Criterion, Throughput};
use mitogen_benches::{bulk, register, round_trips};
use mitogen_core::message::codec::{Decoder, encode};
use mitogen_core::{ContextId, Handle, Local, Message};
use std::time::Duration;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for size in [0usize, 4096, 1 << 20] {
        let msg = Message::bytes(ContextId(3), Handle(1000), vec![7u8; size]);
        let mut wire = Vec::new();
        encode(&msg, &mut wire);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &msg, |b, m| {
            let mut out = Vec::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                encode(m, &mut out);
            });
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, w| {
            let mut dec = Decoder::new(1 << 27);
            b.iter(|| {
                let mut buf = bytes::BytesMut::from(&w[..]);
                dec.decode(&mut buf).expect("valid").expect("whole frame")
            });
        });
    }
    g.finish();
}

fn local(c: &mut Criterion) {
    let router = mitogen_core::init(register).expect("router");
    let ctx = router.connect(&Local::new()).expect("child");
    let mut g = c.benchmark_group("local");
    for payload in [0usize, 4096] {
        g.bench_function(BenchmarkId::new("call_round_trip", payload), |b| {
            b.iter_custom(|n| round_trips(&ctx, payload, n as usize).into_iter().sum());
        });
    }
    g.throughput(Throughput::Bytes(64 << 20));
    g.sample_size(10);
    g.bench_function("bulk_1MiB_messages_64MiB", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| bulk(&ctx, 1 << 20, 64 << 20))
                .sum::<Duration>()
        });
    });
    g.finish();
}

fn main() {
    mitogen_core::agent_main(register);
    let mut c = Criterion::default().configure_from_args();
    codec(&mut c);
    local(&mut c);
    c.final_summary();
}
