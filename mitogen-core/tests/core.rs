//! Integration tests on real processes: this binary is also the agent.

mod functions;

use functions::*;
use mitogen_core::layer::LayerRouter;
use mitogen_core::{
    CallErrorKind, ConnectError, Context, Local, Message, Policy, RecvError, Registry, Router,
    RouterOptions, Select,
};
use mitogen_test_support::{process_gone, take_logs, tests, wait_until};
use std::time::{Duration, Instant};

fn main() {
    mitogen_core::agent_main(register);
    mitogen_test_support::run(tests![
        call_round_trip_child_and_grandchild,
        agent_starts_its_own_child,
        unknown_function_is_a_call_error,
        bad_arguments_are_a_call_error,
        remote_err_is_a_call_error,
        panic_is_a_call_error_and_agent_survives,
        chain_stops_after_first_failure,
        dead_reply_for_unknown_handle,
        sibling_call_refused_by_policy,
        receiver_policy_refuses,
        forged_src_and_auth_are_dropped,
        child_cannot_capture_routes,
        unidirectional_blocks_siblings,
        oversize_frame_closes_only_that_stream,
        garbage_frame_closes_only_that_stream,
        oversize_send_gets_dead_reply,
        issue9_oversize_reply_fails_promptly_at_every_hop,
        issue9_typed_error_survives_hops,
        issue9_call_to_dead_context_is_disconnected,
        issue9_abandoned_call_stays_pending_and_is_cancelled,
        issue10_stopped_child_bounds_the_intermediary,
        issue10_slow_consumer_bounds_both_ends,
        sigkill_child_fails_pending_calls_fast,
        parent_killed_child_exits,
        shutdown_cascades,
        detached_context_outlives_parent,
        many_threads_many_calls,
        logs_forwarded_with_context_and_level,
        issue9_log_level_follows_the_controller_after_connect,
        sender_streams_back_and_closes,
        select_over_pending_calls,
        call_timeout_and_dropped_router,
        connect_missing_binary,
        connect_garbage_before_greeting,
        connect_early_exit,
        connect_timeout_kills_child,
        broker_timers_fire_in_order,
        diagnostic_dump_reaches_controller,
        codec_fuzz_body_smoke,
        route_fuzz_body_smoke,
    ]);
}

fn router() -> Router {
    router_with(RouterOptions::new())
}

fn router_with(opts: RouterOptions) -> Router {
    Router::new(opts, Registry::new(register)).expect("router starts")
}

fn child(r: &Router) -> Context {
    r.connect(&Local::new()).expect("local child connects")
}

fn call_round_trip_child_and_grandchild() {
    let r = router();
    let a = child(&r);
    let b = r
        .connect_via(&Local::new(), &a)
        .expect("grandchild connects");
    assert_ne!(a.id(), b.id());
    assert_eq!(a.call::<Add>(&(2, 3)).unwrap(), 5);
    assert_eq!(b.call::<Add>(&(20, 3)).unwrap(), 23);
    let (pa, pb) = (a.call::<Pid>(&()).unwrap(), b.call::<Pid>(&()).unwrap());
    assert!(pa != pb && pa != std::process::id());
    // The grandchild is a child of the child, not of us.
    assert!(
        mitogen_test_support::children_of(pa)
            .iter()
            .any(|(p, _)| *p == pb)
    );
    assert_eq!(b.call::<EchoBytes>(&vec![7; 100_000]).unwrap(), 100_000);
}

/// An agent connects a child of its own: the child is its process, got an
/// id from the controller's allocator, and is routable from the controller.
fn agent_starts_its_own_child() {
    let r = router();
    let a = child(&r);
    let apid = a.call::<Pid>(&()).unwrap();
    let (id, pid) = a.call::<SpawnChild>(&()).unwrap();
    assert!(
        mitogen_test_support::children_of(apid)
            .iter()
            .any(|(p, _)| *p == pid),
        "{pid} is not a child of the agent {apid}"
    );
    let id = mitogen_core::ContextId(id);
    assert!(id != a.id() && id != r.id());
    assert!(r.is_connected(id), "the controller has no route to {id}");
    assert_eq!(r.context(id).call::<Pid>(&()).unwrap(), pid);
}

/// Paths for a BlockUntil call: (started marker, release file).
fn block_files(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = std::env::temp_dir().join(format!("mitogen-{tag}-{}", std::process::id()));
    let started = base.with_extension("started");
    let release = base.with_extension("release");
    let _ = std::fs::remove_file(&started);
    let _ = std::fs::remove_file(&release);
    (started, release)
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn unknown_function_is_a_call_error() {
    let r = router();
    let a = child(&r);
    let e = a.call::<NotRegistered>(&()).unwrap_err();
    assert_eq!(e.kind, CallErrorKind::UnknownFunction);
    assert_eq!(
        (e.context, e.function.as_str()),
        (a.id(), "test::not_registered")
    );
    assert!(e.to_string().contains(a.name()), "{e}");
}

fn bad_arguments_are_a_call_error() {
    let r = router();
    let a = child(&r);
    let e = a.call::<AddWrongArgs>(&()).unwrap_err();
    assert!(matches!(e.kind, CallErrorKind::BadArguments(_)), "{e}");
}

fn remote_err_is_a_call_error() {
    let r = router();
    let a = child(&r);
    let e = a.call::<Fail>(&"disk on fire".into()).unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Failed("disk on fire".into()));
}

fn panic_is_a_call_error_and_agent_survives() {
    let r = router();
    let a = child(&r);
    let e = a.call::<Panic>(&()).unwrap_err();
    assert_eq!(
        e.kind,
        CallErrorKind::Panicked("deliberate panic in agent".into())
    );
    assert_eq!(a.call::<Echo>(&9).unwrap(), 9);
}

fn chain_stops_after_first_failure() {
    let r = router();
    let a = child(&r);
    let chain = a.chain();
    chain.call_no_reply::<Incr>(&1).unwrap();
    chain.call_no_reply::<Fail>(&"step 2".into()).unwrap();
    chain.call_no_reply::<Incr>(&100).unwrap();
    let e = chain.call::<Incr>(&1000).unwrap_err();
    match &e.kind {
        CallErrorKind::ChainAborted { function, cause } => {
            assert_eq!(function, "test::fail");
            assert_eq!(**cause, CallErrorKind::Failed("step 2".into()));
        }
        other => panic!("expected ChainAborted, got {other:?}"),
    }
    // Neither call after the failure ran; other chains are unaffected.
    assert_eq!(a.call::<Incr>(&0).unwrap(), 1);
    chain.reset().unwrap();
    assert_eq!(chain.call::<Incr>(&1).unwrap(), 2);
}

fn dead_reply_for_unknown_handle() {
    let r = router();
    let a = child(&r);
    let rx = r.receiver();
    let mut msg = Message::bytes(a.id(), UNUSED_HANDLE, &b"hello"[..]);
    msg.reply_to = rx.handle();
    a.send(msg);
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(RecvError::Dead { reason, from }) => {
            assert_eq!(reason, mitogen_core::message::DEAD_INVALID_HANDLE);
            assert_eq!(from, a.id());
        }
        other => panic!("expected a dead reply, got {other:?}"),
    }
}

fn sibling_call_refused_by_policy() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    let text = a.call::<CallOther>(&b.id().0).unwrap();
    assert!(text.contains("refused by policy"), "{text}");
    // The controller (an ancestor) may call both.
    assert_eq!(b.call::<Echo>(&1).unwrap(), 1);
}

fn receiver_policy_refuses() {
    let r = router();
    let a = child(&r);
    // Only the controller itself has authority over its own receivers here.
    let rx = r.receiver_with(Policy::ParentAuthority);
    a.call::<Stream>(&(rx.sender(), 1)).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(300))
            .is_err_and(|e| e == RecvError::Timeout)
    );
    let open = r.receiver_with(Policy::Any);
    a.call::<Stream>(&(open.sender(), 1)).unwrap();
    assert_eq!(
        open.recv_value::<u64>(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap(),
        0
    );
}

fn forged_src_and_auth_are_dropped() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    let rx = r.receiver();
    let deadline = || Some(Instant::now() + Duration::from_secs(5));
    // src_id claims to be the sibling.
    a.call::<Forge>(&(rx.sender(), b.id().0, a.id().0)).unwrap();
    assert_eq!(rx.recv_value::<String>(deadline()).unwrap(), "genuine");
    // auth_id claims the controller's authority.
    a.call::<Forge>(&(rx.sender(), a.id().0, 0)).unwrap();
    assert_eq!(rx.recv_value::<String>(deadline()).unwrap(), "genuine");
    assert!(rx.try_recv().unwrap().is_none());
    assert!(
        take_logs()
            .iter()
            .filter(|l| l.message.contains("bad src_id")
                || l.message.contains("claims to be this context"))
            .count()
            >= 2
    );
}

fn unidirectional_blocks_siblings() {
    let r = router_with(RouterOptions::new().unidirectional(true));
    let (a, b) = (child(&r), child(&r));
    let text = a.call::<CallOther>(&b.id().0).unwrap();
    assert!(text.contains("unidirectional"), "{text}");
    // Inherited: a grandchild cannot reach its parent's sibling either.
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let text = c.call::<CallOther>(&b.id().0).unwrap();
    assert!(
        text.contains("unidirectional") || text.contains("refused"),
        "{text}"
    );
    assert_eq!(c.call::<Echo>(&5).unwrap(), 5);
}

fn corrupt_stream_case(bytes: Vec<u8>, expect_log: &str) {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    let pending = a.call_async::<Sleep>(&200).unwrap();
    let sent = b.call::<WriteRaw>(&bytes);
    // `b` wrote garbage on its stream; its reply (if any) cannot be parsed.
    let _ = sent;
    let e = b
        .call_timeout::<Echo>(&1, Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            CallErrorKind::Disconnected(_) | CallErrorKind::Refused(_)
        ),
        "{e}"
    );
    // `a` is untouched.
    assert_eq!(
        a.call_timeout::<Echo>(&2, Duration::from_secs(15))
            .map_err(|e| e.to_string()),
        Ok(2)
    );
    pending.wait().unwrap();
    let logs = take_logs();
    assert!(
        logs.iter().any(|l| l.message.contains(expect_log)),
        "no log mentioning {expect_log:?}: {logs:?}"
    );
}

fn oversize_frame_closes_only_that_stream() {
    let mut header = b"MK".to_vec();
    header.extend_from_slice(&[0; 20]);
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    corrupt_stream_case(header, "exceeds max_message_size");
}

fn garbage_frame_closes_only_that_stream() {
    corrupt_stream_case(
        b"this is definitely not a frame header".to_vec(),
        "unknown payload encoding",
    );
}

fn oversize_send_gets_dead_reply() {
    let r = router_with(RouterOptions::new().max_message_size(1 << 20));
    let a = child(&r);
    let e = a.call::<EchoBytes>(&vec![0; 2 << 20]).unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::TooLarge(r) if r.contains("max_message_size")),
        "{e}"
    );
    assert_eq!(a.call::<EchoBytes>(&vec![0; 1000]).unwrap(), 1000);
}

/// A reply (or a value sent to a channel) over `max_message_size` fails the
/// waiting side at once, at the first hop and through an intermediary.
fn issue9_oversize_reply_fails_promptly_at_every_hop() {
    let r = router_with(RouterOptions::new().max_message_size(1 << 20));
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    for ctx in [&a, &c] {
        let t0 = Instant::now();
        let e = ctx
            .call_timeout::<BigReply>(&(2 << 20), Duration::from_secs(60))
            .unwrap_err();
        println!(
            "    {}: too-large reply reported after {:?}",
            ctx.name(),
            t0.elapsed()
        );
        assert!(
            matches!(&e.kind, CallErrorKind::TooLarge(why) if why.contains("reply")),
            "{e}"
        );
        // The arguments direction, to the same context.
        let e = ctx.call::<EchoBytes>(&vec![0; 2 << 20]).unwrap_err();
        assert!(matches!(&e.kind, CallErrorKind::TooLarge(_)), "{e}");
        // A value streamed to a receiver here: the receiver learns it.
        let rx = r.receiver();
        ctx.call::<SendBig>(&(rx.sender(), 2 << 20)).unwrap();
        match rx.recv_timeout(Duration::from_secs(60)) {
            Err(RecvError::Dead { reason, .. }) => {
                assert!(reason.contains("max_message_size"), "{reason}")
            }
            other => panic!("expected a dead message, got {other:?}"),
        }
        assert_eq!(ctx.call::<BigReply>(&1000).unwrap().len(), 1000);
    }
}

/// A registered error type comes back typed, directly and when an
/// intermediary's function fails with the error it got from onward.
fn issue9_typed_error_survives_hops() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let e = c.call::<QuotaFail>(&3).unwrap_err();
    assert_eq!(
        e.downcast_ref::<QuotaError>(),
        Some(&QuotaError { used: 3 })
    );
    let e = a.call::<Relay>(&c.id().0).unwrap_err();
    assert_eq!(
        e.downcast_ref::<QuotaError>(),
        Some(&QuotaError { used: 7 }),
        "{e}"
    );
    let text = mitogen_core::error_chain(&e);
    assert!(
        text.contains("test::relay") && text.contains("quota exceeded: 7 used"),
        "{text}"
    );
    // An untyped failure has no typed value.
    let e = a.call::<Fail>(&"plain".into()).unwrap_err();
    assert!(e.downcast_ref::<QuotaError>().is_none());
}

/// Calling a context that died says "disconnected", naming it, whether it
/// was a child or behind one.
fn issue9_call_to_dead_context_is_disconnected() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let cpid = c.call::<Pid>(&()).unwrap();
    mitogen_test_support::kill9(cpid);
    assert!(wait_until(Duration::from_secs(10), || !r.is_connected(c.id())));
    let e = c.call::<Pid>(&()).unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::Disconnected(why) if why.contains(c.name())),
        "{e}"
    );
    let apid = a.call::<Pid>(&()).unwrap();
    mitogen_test_support::kill9(apid);
    assert!(wait_until(Duration::from_secs(10), || !r.is_connected(a.id())));
    let e = a.call::<Pid>(&()).unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::Disconnected(why) if why.contains(a.name())),
        "{e}"
    );
    assert!(e.kind.is_disconnected());
}

/// A call whose caller gave up still counts as pending until it ends, sees
/// that it was cancelled, and a call queued behind it is skipped.
fn issue9_abandoned_call_stays_pending_and_is_cancelled() {
    let r = router();
    let a = child(&r);
    let before = a.call::<Incr>(&0).unwrap();
    let (started, flag) = block_files("cancel");
    let e = a
        .call_timeout::<BlockUntil>(
            &(path_str(&started), path_str(&flag)),
            Duration::from_millis(100),
        )
        .unwrap_err();
    assert!(matches!(e.kind, CallErrorKind::Timeout(_)), "{e}");
    assert_eq!(
        r.pending_calls(a.id()),
        1,
        "the abandoned call is still running"
    );
    // Queued behind it, and given up on too: it must not run.
    let e = a
        .call_timeout::<Incr>(&1, Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(e.kind, CallErrorKind::Timeout(_)), "{e}");
    assert_eq!(r.pending_calls(a.id()), 2);
    std::fs::write(&flag, "go").unwrap();
    assert!(wait_until(Duration::from_secs(30), || r
        .pending_calls(a.id())
        == 0));
    assert!(
        a.call::<SawCancel>(&()).unwrap(),
        "CallCx::is_cancelled was false"
    );
    assert_eq!(
        a.call::<Incr>(&0).unwrap(),
        before,
        "the cancelled queued call ran"
    );
    let _ = std::fs::remove_file(&flag);
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// 8 x 100 MiB sent to a stopped context through an intermediary: the
/// intermediary holds a bounded amount (the stream to the stopped child
/// stays near its high-water mark and the controller's sends wait), and
/// everything arrives once the child continues.
fn issue10_stopped_child_bounds_the_intermediary() {
    const MIB: usize = 1 << 20;
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let (apid, cpid) = (a.call::<Pid>(&()).unwrap(), c.call::<Pid>(&()).unwrap());
    let base_kib = a.call::<PeakRss>(&()).unwrap();
    signal(cpid, rustix::process::Signal::STOP);
    let sender = std::thread::spawn(move || {
        let payload = vec![5u8; 100 * MIB];
        (0..8)
            .map(|_| c.call_async::<EchoBytes>(&payload).unwrap())
            .collect::<Vec<_>>()
    });
    // Wait until the link to `a` has carried several MiB and then stops
    // moving: a is full and has stopped reading.
    let start = r.stream_bytes(a.id()).map_or(0, |(tx, _)| tx);
    let mut last = (start, Instant::now());
    let stalled = wait_until(Duration::from_secs(120), || {
        let now = r.stream_bytes(a.id()).map_or(0, |(tx, _)| tx);
        if now != last.0 {
            last = (now, Instant::now());
        }
        now > start + (8 << 20) && last.1.elapsed() > Duration::from_millis(500)
    });
    assert!(stalled, "the link to the intermediary never filled");
    let peak_kib = peak_rss_kib(apid);
    println!(
        "    intermediary peak RSS {} MiB (started at {} MiB); controller sent {} MiB before the stall",
        peak_kib / 1024,
        base_kib / 1024,
        (last.0 - start) >> 20
    );
    signal(cpid, rustix::process::Signal::CONT);
    let calls = sender.join().unwrap();
    for call in calls {
        assert_eq!(
            call.wait_timeout(Duration::from_secs(120)).unwrap(),
            100 * MIB
        );
    }
    assert!(
        peak_kib < base_kib + 64 * 1024,
        "intermediary grew from {base_kib} KiB to {peak_kib} KiB"
    );
}

/// A remote function streaming faster than the controller consumes: the
/// receiver's queue stays under its mark (plus one read's worth), the
/// agent's sends wait instead of queueing without bound, nothing is lost.
fn issue10_slow_consumer_bounds_both_ends() {
    let r = router();
    let a = child(&r);
    let base_kib = a.call::<PeakRss>(&()).unwrap();
    let rx = r.receiver();
    let (n, size) = (100_000u64, 2048u64);
    let call = a
        .call_async::<StreamBytes>(&(rx.sender(), n, size))
        .unwrap();
    let (mut got, mut max_queued) = (0u64, 0usize);
    while let Ok(msg) = rx.recv_timeout(Duration::from_secs(60)) {
        max_queued = max_queued.max(rx.queued_bytes());
        let blob: mitogen_core::Blob = msg.decode().unwrap();
        assert_eq!(blob.len() as u64, size);
        got += 1;
        if got % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    call.wait_timeout(Duration::from_secs(60)).unwrap();
    let peak_kib = a.call::<PeakRss>(&()).unwrap();
    println!(
        "    {got} messages; receiver queue max {} KiB; agent peak RSS {} MiB (from {} MiB)",
        max_queued >> 10,
        peak_kib / 1024,
        base_kib / 1024
    );
    assert_eq!(got, n);
    let limit = mitogen_core::limits::RECV_HIGH_WATER + (8 << 20);
    assert!(
        max_queued <= limit,
        "receiver queue reached {max_queued} bytes"
    );
    assert!(
        peak_kib < base_kib + 64 * 1024,
        "agent grew from {base_kib} KiB to {peak_kib} KiB"
    );
}

fn sigkill_child_fails_pending_calls_fast() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let apid = a.call::<Pid>(&()).unwrap();
    let (sa, ra) = block_files("kill-a");
    let (sc, rc) = block_files("kill-c");
    let on_a = a
        .call_async::<BlockUntil>(&(path_str(&sa), path_str(&ra)))
        .unwrap();
    let on_c = c
        .call_async::<BlockUntil>(&(path_str(&sc), path_str(&rc)))
        .unwrap();
    // Both calls are running (not merely sent) when a dies.
    assert!(wait_until(Duration::from_secs(10), || sa.exists() && sc.exists()));
    let t0 = Instant::now();
    mitogen_test_support::kill9(apid);
    let ea = on_a.wait_timeout(Duration::from_secs(5)).unwrap_err();
    let ec = on_c.wait_timeout(Duration::from_secs(5)).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(ea.kind, CallErrorKind::Disconnected(_)), "{ea}");
    assert!(matches!(ec.kind, CallErrorKind::Disconnected(_)), "{ec}");
    println!("    pending calls failed {took:?} after the kill");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // New calls fail at once too.
    let e = c
        .call_timeout::<Echo>(&1, Duration::from_secs(5))
        .unwrap_err();
    assert!(!matches!(e.kind, CallErrorKind::Timeout(_)), "{e}");
    // c is gone with a (its parent): release its call's file anyway.
    for f in [sa, ra, sc, rc] {
        let _ = std::fs::remove_file(f);
    }
}

fn parent_killed_child_exits() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let (apid, cpid) = (a.call::<Pid>(&()).unwrap(), c.call::<Pid>(&()).unwrap());
    mitogen_test_support::kill9(apid);
    assert!(
        wait_until(Duration::from_secs(3), || process_gone(cpid)),
        "grandchild {cpid} still running"
    );
}

fn shutdown_cascades() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let cpid = c.call::<Pid>(&()).unwrap();
    assert!(a.shutdown_timeout(Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(3), || process_gone(cpid)));
    let e = c
        .call_timeout::<Echo>(&1, Duration::from_secs(5))
        .unwrap_err();
    assert!(!matches!(e.kind, CallErrorKind::Timeout(_)), "{e}");
}

fn detached_context_outlives_parent() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    let cpid = c.call::<Pid>(&()).unwrap();
    c.detach().unwrap();
    let path = std::env::temp_dir().join(format!("mitogen-detach-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    c.call_no_reply::<WriteFileAfter>(&(path.display().to_string(), 500))
        .unwrap();
    // a forwards in order: once it answers this, the call above is in c's
    // stream, and c reads it even after a is gone.
    let apid = a.call::<Pid>(&()).unwrap();
    mitogen_test_support::kill9(apid);
    assert!(
        wait_until(Duration::from_secs(5), || path.exists()),
        "detached context did not finish its call"
    );
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(cpid)),
        "detached context did not exit after"
    );
    let _ = std::fs::remove_file(&path);
}

fn many_threads_many_calls() {
    let r = router();
    let a = child(&r);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let v = t * 1_000_000 + i;
                    assert_eq!(a.call::<Echo>(&v).unwrap(), v);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
}

/// Records of a context connected while logging was off arrive once the
/// controller's level is raised (a logger installed after `connect`), and
/// stop again when it is lowered, through an intermediary too.
fn issue9_log_level_follows_the_controller_after_connect() {
    let saved = log::max_level();
    log::set_max_level(log::LevelFilter::Off);
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    take_logs();
    c.call::<Log>(&"raised".into()).unwrap();
    let mut logs = Vec::new();
    let seen = wait_until(Duration::from_secs(5), || {
        logs.extend(take_logs());
        logs.iter().any(|l| l.message.contains("info: raised"))
    });
    assert!(seen, "{logs:?}");
    log::set_max_level(log::LevelFilter::Error);
    c.call::<Log>(&"lowered".into()).unwrap();
    // A marker sent after it on the same path: once it is here, the
    // record would have been too.
    a.call::<Pid>(&()).unwrap();
    log::set_max_level(saved);
    assert!(!take_logs().iter().any(|l| l.message.contains("lowered")));
}

fn logs_forwarded_with_context_and_level() {
    let r = router();
    let a = child(&r);
    let c = r.connect_via(&Local::new(), &a).unwrap();
    take_logs();
    a.call::<Log>(&"from a".into()).unwrap();
    c.call::<Log>(&"from c".into()).unwrap();
    // Logs travel on the same streams as replies, so they are here already;
    // allow the controller's broker a moment to emit them.
    fn want<'a>(
        ctx: &Context,
        text: &'a str,
    ) -> impl Fn(&&mitogen_test_support::Captured) -> bool + 'a {
        // The record keeps its own target; the context is named in the text.
        let prefix = format!("[{}] ", ctx.name());
        move |l| {
            l.target.ends_with("functions")
                && l.message.starts_with(&prefix)
                && l.message.contains(text)
        }
    }
    let mut logs = Vec::new();
    wait_until(Duration::from_secs(2), || {
        logs.extend(take_logs());
        logs.iter().any(|l| want(&a, "info: from a")(&l))
            && logs.iter().any(|l| want(&c, "info: from c")(&l))
    });
    let a_info: Vec<_> = logs.iter().filter(want(&a, "from a")).collect();
    assert_eq!(a_info.len(), 1, "{logs:?}");
    assert_eq!(a_info[0].level, log::Level::Info);
    assert!(
        logs.iter().any(|l| want(&c, "info: from c")(&l)),
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.message.contains("debug: from")),
        "debug passed the level filter"
    );
}

fn sender_streams_back_and_closes() {
    let r = router();
    let a = child(&r);
    let rx = r.receiver();
    a.call::<Stream>(&(rx.sender(), 5)).unwrap();
    let got: Vec<u64> = (0..5)
        .map(|_| {
            rx.recv_value(Some(Instant::now() + Duration::from_secs(5)))
                .unwrap()
        })
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvError::Closed
    );
}

fn select_over_pending_calls() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    // The slow call outlives the test (the router's drop ends it): no
    // timing window in which it could answer first.
    let slow = a.call_async::<Sleep>(&600_000).unwrap();
    let fast = b.call_async::<Echo>(&77).unwrap();
    let mut sel = Select::new();
    sel.add(slow.receiver());
    let fi = sel.add(fast.receiver());
    let (i, got) = sel.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(i, fi);
    assert_eq!(fast.finish(got).unwrap(), 77);
    // The fast reply receiver is spent (closed); the slow one is still waiting.
    assert_eq!(
        sel.recv_timeout(Duration::from_secs(1))
            .unwrap()
            .1
            .unwrap_err(),
        RecvError::Closed
    );
    let mut sel = Select::new();
    sel.add(slow.receiver());
    assert_eq!(
        sel.recv_timeout(Duration::from_millis(10)).unwrap_err(),
        RecvError::Timeout
    );
}

fn call_timeout_and_dropped_router() {
    let r = router();
    let a = child(&r);
    let apid = a.call::<Pid>(&()).unwrap();
    let e = a
        .call_timeout::<Sleep>(&1_000, Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(e.kind, CallErrorKind::Timeout(_)), "{e}");
    drop(a);
    drop(r);
    assert!(process_gone(apid) || wait_until(Duration::from_secs(3), || process_gone(apid)));
}

fn connect_missing_binary() {
    let r = router();
    let e = r
        .connect(&Local::new().program("/nonexistent/agent"))
        .unwrap_err();
    assert!(matches!(e, ConnectError::Spawn { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/agent"), "{e}");
}

fn connect_garbage_before_greeting() {
    let r = router();
    let e = r
        .connect(
            &Local::new()
                .program("/bin/sh")
                .args(["-c", "echo 'hello, I am not an agent'; sleep 5"]),
        )
        .unwrap_err();
    assert!(matches!(e, ConnectError::Garbage { .. }), "{e}");
    assert!(e.to_string().contains("hello, I am not an agent"), "{e}");
}

fn connect_early_exit() {
    let r = router();
    let e = r
        .connect(
            &Local::new()
                .program("/bin/sh")
                .args(["-c", "echo 'agent: cannot start' >&2; exit 3"]),
        )
        .unwrap_err();
    assert!(matches!(e, ConnectError::EarlyExit { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("cannot start") && text.contains('3'),
        "{text}"
    );
}

fn connect_timeout_kills_child() {
    let r = router();
    let t0 = Instant::now();
    let e = r
        .connect(
            &Local::new()
                .program("/bin/sleep")
                .args(["30"])
                .connect_timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(matches!(e, ConnectError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

fn codec_fuzz_body_smoke() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..2000usize {
        let data: Vec<u8> = (0..len % 300)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed % 3 == 0 {
                    b"MKRS"[(seed % 4) as usize]
                } else {
                    seed as u8
                }
            })
            .collect();
        mitogen_core::fuzzing::decode_arbitrary(&data);
    }
}

fn broker_timers_fire_in_order() {
    let r = router();
    let latch = std::sync::Arc::new(mitogen_core::Latch::new());
    let t0 = Instant::now();
    for (ms, tag) in [(60u64, "third"), (20, "first"), (40, "second")] {
        let l = latch.clone();
        r.schedule(Duration::from_millis(ms), move || {
            l.put((tag, t0.elapsed()));
        });
    }
    let deadline = Some(Instant::now() + Duration::from_secs(5));
    let got: Vec<_> = (0..3).map(|_| latch.get(deadline).unwrap()).collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    assert!(got[0].1 >= Duration::from_millis(20), "{got:?}");
    latch.close();
    assert_eq!(latch.get(None).unwrap_err(), RecvError::Closed);
}

fn diagnostic_dump_reaches_controller() {
    let r = router();
    let a = r
        .connect(&Local::new().env(mitogen_core::layer::DUMP_ENV, "0.05"))
        .unwrap();
    // Still running whenever the dump comes (the router's drop ends it):
    // no window in which it finished before a dump showed it.
    let _pending = a.call_async::<Sleep>(&600_000).unwrap();
    let mut logs = Vec::new();
    let prefix = format!("[{}] ", a.name());
    let seen = wait_until(Duration::from_secs(5), || {
        logs.extend(take_logs());
        let dump = |s: &str| {
            logs.iter().any(|l| {
                l.target == "mitogen::dump"
                    && l.message.starts_with(&prefix)
                    && l.message.contains(s)
            })
        };
        dump("threads: ") && dump("running test::sleep") && dump("stream parent 0")
    });
    assert!(seen, "no complete dump from {}: {logs:?}", a.name());
    assert!(r.is_connected(a.id()));
}

fn route_fuzz_body_smoke() {
    mitogen_test_support::smoke_inputs(0x9e37_79b9_7f4a_7c15, 3000, 200, |data| {
        mitogen_core::fuzzing::route_decisions(data);
    });
}

fn child_cannot_capture_routes() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    let bpid = b.call::<Pid>(&()).unwrap();
    // A claims to have B, and the controller, behind it.
    a.call::<AnnounceRoute>(&b.id().0).unwrap();
    a.call::<AnnounceRoute>(&0).unwrap();
    // Calls to B still reach B.
    assert_eq!(b.call::<Pid>(&()).unwrap(), bpid);
    let logs = take_logs();
    assert!(
        logs.iter()
            .filter(|l| l.message.contains("refused a route"))
            .count()
            >= 2,
        "{logs:?}"
    );
}
