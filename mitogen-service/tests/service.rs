//! mitogen-service on real agent processes.

use mitogen_core::layer::LayerRouter;
use mitogen_core::{
    CallCx, CallErrorKind, Context, ContextId, FnError, Function, Local, Policy, Registry, Router,
    RouterOptions,
};
use mitogen_service::{
    CHUNK, Cause, Checksum, FetchFrom, Service, ServiceCx, ServiceError, ServiceExt, ServiceMethod,
    Stage, TransferError, WriteOptions, fetch, push_file, put_bytes, put_file,
    register_remote_path, register_remote_prefix,
};
use mitogen_test_support::{kill9, process_gone, tests, wait_until};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A counter service.
struct Counter(AtomicU64);
impl Service for Counter {
    const NAME: &'static str = "test.counter";
    fn activate(_: &Router) -> Result<Self, FnError> {
        Ok(Self(AtomicU64::new(0)))
    }
}

macro_rules! method {
    ($t:ident, $name:literal, $args:ty => $out:ty, $policy:expr, |$s:pat_param, $a:pat_param| $body:expr) => {
        struct $t;
        impl ServiceMethod for $t {
            type Service = Counter;
            const NAME: &'static str = $name;
            type Args = $args;
            type Output = $out;
            fn policy() -> Policy {
                $policy
            }
            fn call($s: &Counter, _: &ServiceCx<'_>, $a: $args) -> Result<$out, FnError> {
                $body
            }
        }
    };
}

method!(Add, "add", u64 => u64, Policy::Any, |c, n| Ok(c.0.fetch_add(n, Ordering::SeqCst) + n));
method!(AdminAdd, "admin_add", u64 => u64, Policy::ParentAuthority, |c, n| Ok(c.0.fetch_add(n, Ordering::SeqCst) + n));
// Registered nowhere / wrong arguments.
method!(NoSuchMethod, "nope", () => (), Policy::Any, |_, ()| Ok(()));
method!(AddWrongArgs, "add", () => u64, Policy::Any, |_, ()| Ok(0));

/// Holds a worker until released: a method that is certainly still
/// running, without sleeping.
#[derive(Default)]
struct Gate {
    state: parking_lot::Mutex<(u32, bool)>,
    cv: parking_lot::Condvar,
}
impl Service for Gate {
    const NAME: &'static str = "test.gate";
    fn activate(_: &Router) -> Result<Self, FnError> {
        Ok(Self::default())
    }
}
macro_rules! gate_method {
    ($t:ident, $name:literal, $out:ty, |$g:pat_param| $body:expr) => {
        struct $t;
        impl ServiceMethod for $t {
            type Service = Gate;
            const NAME: &'static str = $name;
            type Args = ();
            type Output = $out;
            fn call($g: &Gate, _: &ServiceCx<'_>, (): ()) -> Result<$out, FnError> {
                $body
            }
        }
    };
}
gate_method!(Hold, "hold", (), |g| {
    let mut st = g.state.lock();
    st.0 += 1;
    while !st.1 {
        g.cv.wait(&mut st);
    }
    st.0 -= 1;
    Ok(())
});
gate_method!(Holding, "holding", u32, |g| Ok(g.state.lock().0));
gate_method!(Release, "release", (), |g| {
    g.state.lock().1 = true;
    g.cv.notify_all();
    Ok(())
});

struct Ghost;
impl Service for Ghost {
    const NAME: &'static str = "test.ghost";
    fn activate(_: &Router) -> Result<Self, FnError> {
        Ok(Self)
    }
}
struct GhostPing;
impl ServiceMethod for GhostPing {
    type Service = Ghost;
    const NAME: &'static str = "ping";
    type Args = ();
    type Output = ();
    fn call(_: &Ghost, _: &ServiceCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}

macro_rules! function {
    ($t:ident, $name:literal, $args:ty => $out:ty, |$cx:pat_param, $a:pat_param| $body:expr) => {
        struct $t;
        impl Function for $t {
            const NAME: &'static str = $name;
            type Args = $args;
            type Output = $out;
            fn call($cx: &CallCx<'_>, $a: $args) -> Result<$out, FnError> {
                $body
            }
        }
    };
}

function!(Pid, "svc-test::pid", () => u32, |_, ()| Ok(std::process::id()));
function!(Echo, "svc-test::echo", u64 => u64, |_, v| Ok(v));
function!(
    CallSibling, "svc-test::call_sibling", (u32, bool) => String, |cx, (id, admin)| {
        let other = cx.router().context(ContextId(id));
        let r = if admin { other.call_service::<AdminAdd>(&1) } else { other.call_service::<Add>(&1) };
        Ok(match r {
            Ok(v) => format!("ok {v}"),
            // The refusal arrives typed, not as text.
            Err(e) => match e.downcast_ref::<ServiceError>() {
                Some(refusal) => format!("{refusal:?}"),
                None => format!("{:?}", e.kind),
            },
        })
    }
);
function!(WaitPushed, "svc-test::wait_pushed", (String, u64) => bool, |cx, (p, ms)| {
    Ok(mitogen_service::wait_pushed(cx.router(), &p, Duration::from_millis(ms)))
});

fn register(reg: &mut Registry) {
    mitogen_service::register_with(reg, |s| {
        s.add::<Add>()
            .add::<AdminAdd>()
            .add::<Hold>()
            .add::<Holding>()
            .add::<Release>();
    });
    reg.add::<Pid>()
        .add::<Echo>()
        .add::<CallSibling>()
        .add::<WaitPushed>();
}

fn main() {
    mitogen_core::agent_main(register);
    mitogen_test_support::run(tests![
        service_calls_and_distinct_errors,
        activation_and_method_policies,
        slow_method_blocks_nothing_else,
        sizes_arrive_identical,
        mode_owner_and_mtime_as_asked,
        refusals_are_distinct,
        killed_target_leaves_nothing,
        killed_sender_leaves_nothing,
        slow_reader_does_not_stall_others,
        call_answered_during_1gib_transfer,
        tree_push_crosses_first_link_once,
        stale_rollout_pushes_the_new_version,
        torn_copy_rewritten_mid_send_fails,
        torn_copy_appended_mid_send_fails,
        file_errors_name_the_destination,
        full_disk_names_the_destination_once,
        sparse_files_stay_sparse,
    ]);
}

fn router() -> Router {
    Router::new(RouterOptions::new(), Registry::new(register)).expect("router")
}

fn child(r: &Router) -> Context {
    r.connect(&Local::new()).expect("child")
}

/// A fresh empty directory for one test.
fn scratch(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "mitogen-svc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn make_file(path: &Path, size: usize) {
    make_file_with(path, size, 0x1234_5678, false);
}

/// Writes `size` pseudo-random bytes from `seed` into `path`: a new file,
/// or, with `in_place`, over the existing one's bytes without truncating.
fn make_file_with(path: &Path, size: usize, seed: u32, in_place: bool) {
    let mut data = Vec::with_capacity(size.min(1 << 20));
    let mut x = seed;
    let mut f = if in_place {
        std::fs::OpenOptions::new().write(true).open(path).unwrap()
    } else {
        std::fs::File::create(path).unwrap()
    };
    let mut left = size;
    while left > 0 {
        data.clear();
        for _ in 0..left.min(1 << 20) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        std::io::Write::write_all(&mut f, &data).unwrap();
        left -= data.len();
    }
}

fn checksum(path: &Path) -> (u64, u64) {
    let mut c = Checksum::default();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = std::io::Read::read(&mut f, &mut buf).unwrap();
        if k == 0 {
            return (n, c.finish());
        }
        c.update(&buf[..k]);
        n += k as u64;
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn service_calls_and_distinct_errors() {
    let r = router();
    let a = child(&r);
    assert_eq!(a.call_service::<Add>(&2).unwrap(), 2);
    assert_eq!(a.call_service::<Add>(&3).unwrap(), 5);
    let errors = [
        a.call_service::<GhostPing>(&()).unwrap_err(),
        a.call_service::<NoSuchMethod>(&()).unwrap_err(),
        a.call_service::<AddWrongArgs>(&()).unwrap_err(),
    ];
    let kinds: Vec<_> = errors.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        errors[0].downcast_ref::<ServiceError>(),
        Some(&ServiceError::UnknownService("test.ghost".into())),
        "{kinds:?}"
    );
    assert_eq!(
        errors[1].downcast_ref::<ServiceError>(),
        Some(&ServiceError::UnknownMethod("nope".into())),
        "{kinds:?}"
    );
    assert!(
        matches!(&kinds[2], CallErrorKind::BadArguments(_)),
        "{kinds:?}"
    );
}

fn activation_and_method_policies() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    // A sibling may not activate B's service...
    let text = a.call::<CallSibling>(&(b.id().0, false)).unwrap();
    assert!(
        text.contains("PolicyRefused") && text.contains("activate"),
        "{text}"
    );
    // ...but once the controller has, it may call what its policy allows,
    assert_eq!(b.call_service::<Add>(&10).unwrap(), 10);
    assert_eq!(a.call::<CallSibling>(&(b.id().0, false)).unwrap(), "ok 11");
    // and nothing else.
    let text = a.call::<CallSibling>(&(b.id().0, true)).unwrap();
    assert!(
        text.contains("PolicyRefused") && text.contains("admin_add"),
        "{text}"
    );
}

fn slow_method_blocks_nothing_else() {
    let r = router();
    let a = child(&r);
    let slow = a.call_service_async::<Hold>(&()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || a
            .call_service::<Holding>(&())
            .unwrap()
            == 1),
        "the slow method never started"
    );
    // It cannot finish until released, so these ran beside it.
    assert_eq!(a.call_service::<Add>(&1).unwrap(), 1);
    assert_eq!(a.call::<Echo>(&7).unwrap(), 7);
    assert!(
        slow.receiver().try_recv().unwrap().is_none(),
        "the slow method should still be running"
    );
    a.call_service::<Release>(&()).unwrap();
    slow.wait_timeout(Duration::from_secs(10)).unwrap();
}

fn sizes_arrive_identical() {
    let r = router();
    let a = child(&r);
    let src = scratch("sizes-src");
    let dst = scratch("sizes-dst");
    for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 100 << 20] {
        let s = src.join(format!("f{size}"));
        make_file(&s, size);
        let d = dst.join(format!("f{size}"));
        let mut calls = 0;
        let stat = put_file(
            &r,
            &a,
            &s,
            d.to_str().unwrap(),
            &WriteOptions::default(),
            |_| calls += 1,
        )
        .unwrap();
        assert_eq!(stat.size, size as u64);
        assert_eq!(checksum(&d), checksum(&s), "size {size}");
        assert!(calls >= 1);
        let (ms, md) = (
            std::fs::metadata(&s).unwrap(),
            std::fs::metadata(&d).unwrap(),
        );
        assert_eq!(
            ms.modified().unwrap(),
            md.modified().unwrap(),
            "mtime kept for size {size}"
        );
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&ms.permissions()),
            std::os::unix::fs::PermissionsExt::mode(&md.permissions())
        );
    }
    assert_eq!(
        entries(&dst).len(),
        6,
        "no temp files left: {:?}",
        entries(&dst)
    );
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

fn refusals_are_distinct() {
    let r = router();
    let (a, b) = (child(&r), child(&r));
    let served = scratch("served");
    let dst = scratch("refused-dst");
    std::fs::write(served.join("ok"), "fine").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", served.join("escape")).unwrap();
    register_remote_prefix(&a, served.to_str().unwrap()).unwrap();
    let get = |p: &str| {
        fetch(&r, &a, p, &dst.join("out"), &WriteOptions::default()).map_err(|e| e.to_string())
    };
    assert!(get(served.join("ok").to_str().unwrap()).is_ok());
    let unregistered = get("/etc/hostname").unwrap_err();
    assert!(unregistered.contains("not registered"), "{unregistered}");
    let traversal = get(&format!("{}/../../etc/passwd", served.display())).unwrap_err();
    assert!(
        traversal.contains("outside every registered prefix"),
        "{traversal}"
    );
    let symlink = get(served.join("escape").to_str().unwrap()).unwrap_err();
    assert!(
        symlink.contains("outside every registered prefix"),
        "{symlink}"
    );
    // A sibling has no authority to make B serve files.
    let kind = b.call::<CallSibling>(&(a.id().0, true)).unwrap();
    assert!(kind.contains("PolicyRefused"), "{kind}");
    let e = register_remote_path(&b, "/etc/passwd");
    assert!(e.is_ok(), "the controller may: {e:?}");
    assert_eq!(entries(&dst), ["out"]);
    let _ = std::fs::remove_dir_all(&served);
    let _ = std::fs::remove_dir_all(&dst);
}

fn slow_opts() -> WriteOptions {
    WriteOptions {
        slow_ms_per_chunk: 5,
        ..WriteOptions::default()
    }
}

fn killed_target_leaves_nothing() {
    let r = router();
    let a = child(&r);
    let apid = a.call::<Pid>(&()).unwrap();
    let src = scratch("kill-src");
    let dst = scratch("kill-dst");
    make_file(&src.join("big"), 64 << 20);
    // Killed from the progress callback once the target has confirmed some
    // bytes but not all: certainly mid-write (the slow reader needs 2.5 s).
    let mut killed_at = None;
    let e = put_file(
        &r,
        &a,
        &src.join("big"),
        dst.join("big").to_str().unwrap(),
        &slow_opts(),
        |p| {
            if killed_at.is_none() && p.done > 0 && p.done < p.total {
                kill9(apid);
                killed_at = Some(p.done);
            }
        },
    );
    let killed_at = killed_at.expect("the target was never seen mid-transfer");
    eprintln!("    killed after {killed_at} bytes");
    assert!(e.is_err(), "transfer should fail");
    assert!(wait_until(Duration::from_secs(5), || process_gone(apid)));
    assert_eq!(entries(&dst), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// Bytes `pid` has written into unnamed temp files in `dir` (what a
/// receiver writes before committing).
fn temp_bytes_in(pid: u32, dir: &Path) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir) && t != dir))
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum()
}

fn killed_sender_leaves_nothing() {
    let r = router();
    let a = child(&r);
    let b = r.connect_via(&Local::new(), &a).unwrap();
    let (apid, bpid) = (a.call::<Pid>(&()).unwrap(), b.call::<Pid>(&()).unwrap());
    let src = scratch("ksend-src");
    let dst = scratch("ksend-dst");
    make_file(&src.join("big"), 64 << 20);
    // A serves the file to its child B, as a controller would.
    register_remote_path(&a, src.join("big").to_str().unwrap()).unwrap();
    let pending = b
        .call_service_async::<FetchFrom>(&(
            a.id(),
            src.join("big").display().to_string(),
            dst.join("big").display().to_string(),
            slow_opts(),
        ))
        .unwrap();
    // Kill the sender once B has written some of the file, not all of it.
    assert!(
        wait_until(Duration::from_secs(10), || temp_bytes_in(bpid, &dst) > 0),
        "B never started writing"
    );
    kill9(apid);
    let written = temp_bytes_in(bpid, &dst);
    eprintln!("    sender killed with {written} bytes written");
    assert!(written < 64 << 20, "B had already written everything");
    assert!(!matches!(
        pending.wait_timeout(Duration::from_secs(10)),
        Ok(Ok(_))
    ));
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(bpid)),
        "B exits with its parent"
    );
    assert_eq!(entries(&dst), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

fn slow_reader_does_not_stall_others() {
    let r = router();
    let i = child(&r);
    let (t1, t2) = (
        r.connect_via(&Local::new(), &i).unwrap(),
        r.connect_via(&Local::new(), &i).unwrap(),
    );
    let src = scratch("fair-src");
    let dst = scratch("fair-dst");
    make_file(&src.join("f"), 32 << 20);
    let svc = mitogen_service::FileService::local(&r).unwrap();
    svc.register_path(src.join("f")).unwrap();
    let flag = dst.join("go");
    let key = std::fs::canonicalize(src.join("f"))
        .unwrap()
        .display()
        .to_string();
    let stalled = WriteOptions {
        pause_until_exists: Some(flag.display().to_string()),
        ..WriteOptions::default()
    };
    let p2 = t2
        .call_service_async::<FetchFrom>(&(
            r.id(),
            key.clone(),
            dst.join("t2").display().to_string(),
            stalled,
        ))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || svc
            .progress(t2.id(), &key)
            .is_some()),
        "T2's transfer never started"
    );
    // T2 is stalled on the same link; T1 still gets the whole file.
    let s1 = t1
        .call_service_async::<FetchFrom>(&(
            r.id(),
            key,
            dst.join("t1").display().to_string(),
            WriteOptions::default(),
        ))
        .unwrap()
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert_eq!(s1.size, 32 << 20);
    assert!(
        p2.receiver().try_recv().unwrap().is_none(),
        "T2 cannot have finished while stalled"
    );
    std::fs::write(&flag, "").unwrap();
    p2.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(checksum(&dst.join("t2")), checksum(&src.join("f")));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

fn call_answered_during_1gib_transfer() {
    let r = router();
    let a = child(&r);
    let src = scratch("gib-src");
    let dst = scratch("gib-dst");
    let size: u64 = 1 << 30;
    make_file(&src.join("gib"), size as usize);
    let key = std::fs::canonicalize(src.join("gib"))
        .unwrap()
        .display()
        .to_string();
    let svc = mitogen_service::FileService::local(&r).unwrap();
    let (r2, a2, s2, d2) = (r, a.clone(), src.join("gib"), dst.join("gib"));
    let transfer = std::thread::spawn(move || {
        put_file(
            &r2,
            &a2,
            &s2,
            d2.to_str().unwrap(),
            &WriteOptions::default(),
            |_| {},
        )
    });
    // A call counts when it was sent after the target had confirmed some of
    // the file and answered before it had confirmed all of it.
    let done = || svc.progress(a.id(), &key).map_or(0, |p| p.done);
    let (mut during, mut slowest, mut n) = (0u32, Duration::ZERO, 0u64);
    while !transfer.is_finished() {
        let before = done();
        let t = std::time::Instant::now();
        assert_eq!(
            a.call_timeout::<Echo>(&n, Duration::from_secs(30)).unwrap(),
            n
        );
        let took = t.elapsed();
        n += 1;
        if before > 0 && done() < size {
            during += 1;
            slowest = slowest.max(took);
        }
        // Pacing (not synchronisation): leave the two cores to the transfer.
        std::thread::sleep(Duration::from_millis(5));
    }
    let stat = transfer.join().unwrap().unwrap();
    assert_eq!(stat.size, size);
    eprintln!("    {during} of {n} calls answered mid-transfer, slowest in {slowest:?}");
    assert!(
        during >= 1,
        "no call was answered while the file was moving"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a call waited {slowest:?} behind bulk data"
    );
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

fn tree_push_crosses_first_link_once() {
    let r = router();
    let i = child(&r);
    let targets: Vec<Context> = (0..8)
        .map(|_| r.connect_via(&Local::new(), &i).unwrap())
        .collect();
    let src = scratch("push-src");
    let dst = scratch("push-dst");
    let size = 8 << 20;
    make_file(&src.join("f"), size);
    let dest = dst.join("pushed").display().to_string();
    assert!(!targets[0].call::<WaitPushed>(&(dest.clone(), 10)).unwrap());
    let (tx0, _) = r.stream_bytes(i.id()).unwrap();
    // All eight at once: every target asks the intermediary together, so
    // its fetches of the one file must collapse into one. (They share this
    // machine's disk, so they write one path; each write is atomic.)
    let results = push_file(
        &r,
        &src.join("f"),
        &dest,
        &targets,
        &WriteOptions::default(),
    );
    let want = checksum(&src.join("f"));
    for res in results {
        let stat = res.unwrap();
        assert_eq!((stat.size, stat.checksum), want);
    }
    let (tx1, _) = r.stream_bytes(i.id()).unwrap();
    let over_first_link = tx1 - tx0;
    eprintln!("    8 targets x {size} B at once: {over_first_link} B crossed the first link");
    assert!(
        over_first_link >= size as u64 && over_first_link < size as u64 + size as u64 / 32,
        "{over_first_link} bytes for a {size}-byte file"
    );
    assert_eq!(checksum(Path::new(&dest)), want);
    for t in &targets {
        assert!(t.call::<WaitPushed>(&(dest.clone(), 10)).unwrap());
    }
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// Hardening issue, item 1: a changed file (same path and size, even the
/// same mtime) pushed again through an intermediary that holds the old one.
fn stale_rollout_pushes_the_new_version() {
    let r = router();
    let i = child(&r);
    let targets: Vec<Context> = (0..20)
        .map(|_| r.connect_via(&Local::new(), &i).unwrap())
        .collect();
    let src = scratch("stale-src");
    let dst = scratch("stale-dst");
    let (file, size) = (src.join("f"), 1 << 20);
    make_file(&file, size);
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let dest = |k: usize| dst.join(format!("t{k}")).display().to_string();
    // Each target to its own path, all at once (one push per target, so
    // each target's file can be checked).
    let push = || -> Vec<_> {
        std::thread::scope(|s| {
            let pushes: Vec<_> = targets
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let (r, file, dest) = (&r, &file, dest(k));
                    s.spawn(move || {
                        push_file(
                            r,
                            file,
                            &dest,
                            std::slice::from_ref(t),
                            &WriteOptions::default(),
                        )
                        .remove(0)
                    })
                })
                .collect();
            pushes.into_iter().map(|p| p.join().unwrap()).collect()
        })
    };
    let old = checksum(&file);
    for res in push() {
        assert_eq!(res.unwrap().checksum, old.1);
    }
    // Same path, same size, same mtime: only the content differs.
    make_file_with(&file, size, 0xdead_beef, true);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let new = checksum(&file);
    assert_ne!(new, old);
    let (tx0, _) = r.stream_bytes(i.id()).unwrap();
    for (k, res) in push().into_iter().enumerate() {
        let stat = res.unwrap_or_else(|e| panic!("target {k}: {e}"));
        assert_eq!((stat.size, stat.checksum), new, "target {k}'s result");
        assert_eq!(checksum(Path::new(&dest(k))), new, "target {k}'s file");
    }
    let (tx1, _) = r.stream_bytes(i.id()).unwrap();
    eprintln!("    second push: {} B crossed the first link", tx1 - tx0);
    assert!(tx1 - tx0 < size as u64 * 2, "the new version crossed once");
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// Starts `put_file` of `src` to `dest` on `target` with a receiver that
/// holds still until `flag` exists, and returns once the sender has the
/// file open: it can then send at most one window before the flag.
fn stalled_put(
    r: &Router,
    target: &Context,
    src: &Path,
    dest: &Path,
    flag: &Path,
) -> std::thread::JoinHandle<Result<mitogen_service::FileStat, TransferError>> {
    let opts = WriteOptions {
        pause_until_exists: Some(flag.display().to_string()),
        ..WriteOptions::default()
    };
    let (r2, t2, s2, d2) = (r.clone(), target.clone(), src.to_owned(), dest.to_owned());
    let put =
        std::thread::spawn(move || put_file(&r2, &t2, &s2, d2.to_str().unwrap(), &opts, |_| {}));
    let key = std::fs::canonicalize(src).unwrap().display().to_string();
    let svc = mitogen_service::FileService::local(r).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || svc
            .progress(target.id(), &key)
            .is_some()),
        "the transfer never started"
    );
    put
}

fn assert_changed(res: Result<mitogen_service::FileStat, TransferError>, r: &Router, src: &Path) {
    let e = res.expect_err("a source changed mid-send must not arrive as Ok");
    let text = e.to_string();
    eprintln!("    {text}");
    let f = e
        .file()
        .unwrap_or_else(|| panic!("not a file error: {e:?}"));
    assert!(matches!(f.cause, Cause::Changed(_)), "{e:?}");
    assert_eq!((f.stage, f.context), (Stage::Read, r.id()), "{e:?}");
    assert_eq!(f.path, std::fs::canonicalize(src).unwrap());
    assert!(text.contains("changed while being sent"), "{text}");
}

/// Hardening issue, item 2: a source rewritten in place mid-send.
fn torn_copy_rewritten_mid_send_fails() {
    let r = router();
    let a = child(&r);
    let src = scratch("torn-src");
    let dst = scratch("torn-dst");
    let (file, size) = (src.join("f"), 16 << 20);
    make_file(&file, size);
    // An old mtime, so the rewrite certainly changes it.
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let put = stalled_put(&r, &a, &file, &dst.join("f"), &dst.join("go"));
    make_file_with(&file, size, 0xdead_beef, true);
    std::fs::write(dst.join("go"), "").unwrap();
    assert_changed(put.join().unwrap(), &r, &file);
    assert_eq!(entries(&dst), ["go"], "nothing written");
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// Hardening issue, item 2: a source appended to mid-send.
fn torn_copy_appended_mid_send_fails() {
    let r = router();
    let a = child(&r);
    let src = scratch("append-src");
    let dst = scratch("append-dst");
    let file = src.join("f");
    make_file(&file, 16 << 20);
    let put = stalled_put(&r, &a, &file, &dst.join("f"), &dst.join("go"));
    std::io::Write::write_all(
        &mut std::fs::File::options().append(true).open(&file).unwrap(),
        b"more",
    )
    .unwrap();
    std::fs::write(dst.join("go"), "").unwrap();
    assert_changed(put.join().unwrap(), &r, &file);
    assert_eq!(entries(&dst), ["go"], "nothing written");
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// Asserts `e` is a file error about `path` in `ctx` at `stage` with OS
/// error `errno`, naming the path and the OS error once.
fn assert_dest_error(e: &TransferError, ctx: &Context, path: &Path, stage: Stage, errno: i32) {
    let text = e.to_string();
    eprintln!("    {text}");
    let f = e
        .file()
        .unwrap_or_else(|| panic!("not a file error: {e:?}"));
    assert_eq!(
        (f.context, f.path.as_path(), f.stage, &f.cause),
        (ctx.id(), path, stage, &Cause::Os(errno)),
        "{e:?}"
    );
    let p = path.display().to_string();
    assert_eq!(text.matches(&p).count(), 1, "{text}");
    assert_eq!(
        text.matches(&format!("os error {errno}")).count(),
        1,
        "{text}"
    );
    assert!(text.contains(ctx.name()), "{text}");
}

/// Hardening issue, item 11: errors of small (inline) writes name their
/// path, and a directory destination is refused before any bytes move.
fn file_errors_name_the_destination() {
    let r = router();
    let a = child(&r);
    let src = scratch("errs-src");
    let dst = scratch("errs-dst");
    make_file(&src.join("small"), 1000);
    make_file(&src.join("big"), 16 << 20);
    let missing = dst.join("no-such-dir").join("f");
    let e = put_file(
        &r,
        &a,
        &src.join("small"),
        missing.to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert_dest_error(&e, &a, &missing, Stage::Create, 2);
    let e = put_bytes(
        &a,
        missing.to_str().unwrap(),
        vec![1; 10],
        &WriteOptions::default(),
    )
    .unwrap_err();
    assert_dest_error(&e, &a, &missing, Stage::Create, 2);
    // A directory as the destination: refused before the file moves.
    std::fs::create_dir(dst.join("dir")).unwrap();
    let (tx0, _) = r.stream_bytes(a.id()).unwrap();
    let e = put_file(
        &r,
        &a,
        &src.join("big"),
        dst.join("dir").to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap_err();
    let (tx1, _) = r.stream_bytes(a.id()).unwrap();
    assert_dest_error(&e, &a, &dst.join("dir"), Stage::Check, 21);
    eprintln!("    {} B sent before the refusal", tx1 - tx0);
    assert!(tx1 - tx0 < 64 << 10, "{} bytes moved first", tx1 - tx0);
    assert_eq!(entries(&dst), ["dir"]);
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Hardening issue, item 11: a full disk names the destination (not the
/// source) and the OS error once, streamed or inline.
fn full_disk_names_the_destination_once() {
    if !rustix::process::geteuid().is_root() {
        mitogen_test_support::skip("mounting a tmpfs needs root");
        return;
    }
    let r = router();
    let a = child(&r);
    let src = scratch("full-src");
    let dst = scratch("full-dst");
    let Some(disk) = Tmpfs::mount(&dst, "1m") else {
        mitogen_test_support::skip("cannot mount a tmpfs");
        return;
    };
    make_file(&src.join("big"), 4 << 20);
    make_file(&src.join("small"), 16 << 10);
    let dest = dst.join("big");
    let e = put_file(
        &r,
        &a,
        &src.join("big"),
        dest.to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert_dest_error(&e, &a, &dest, Stage::Write, 28);
    assert!(!e.to_string().contains(&src.display().to_string()), "{e}");
    // Fill it, then an inline write fails the same way.
    make_file(&dst.join("filler"), 0);
    let mut filler = std::fs::File::options()
        .append(true)
        .open(dst.join("filler"))
        .unwrap();
    while std::io::Write::write_all(&mut filler, &[7; 4096]).is_ok() {}
    drop(filler);
    let small = dst.join("small");
    let e = put_file(
        &r,
        &a,
        &src.join("small"),
        small.to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert_dest_error(&e, &a, &small, Stage::Write, 28);
    assert_eq!(entries(&dst), ["filler"]);
    drop(disk);
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

fn mode_owner_and_mtime_as_asked() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = router();
    let a = child(&r);
    let dst = scratch("attrs");
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let root = rustix::process::geteuid().is_root();
    let opts = WriteOptions {
        mode: Some(0o640),
        owner: root.then_some((65534, 65534)),
        mtime: Some(when),
        ..WriteOptions::default()
    };
    let path = dst.join("f");
    put_bytes(&a, path.to_str().unwrap(), b"hello".to_vec(), &opts).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert_eq!(m.modified().unwrap(), when);
    if root {
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    let _ = std::fs::remove_dir_all(&dst);
}

/// The data regions of `path` (SEEK_DATA/SEEK_HOLE), as (start, end).
fn data_regions(path: &Path) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut v = Vec::new();
    let mut at = 0;
    while at < size {
        let Ok(start) = seek(&f, SeekFrom::Data(at)) else {
            break;
        };
        let end = seek(&f, SeekFrom::Hole(start)).unwrap();
        v.push((start, end));
        at = end;
    }
    v
}

/// Whether `a` and `b` hold the same bytes in each of `regions`.
fn same_bytes(a: &Path, b: &Path, regions: &[(u64, u64)]) -> bool {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    regions.iter().all(|&(start, end)| {
        let mut at = start;
        while at < end {
            let n = (end - at).min(1 << 20) as usize;
            let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
            fa.read_exact_at(&mut x, at).unwrap();
            fb.read_exact_at(&mut y, at).unwrap();
            if x != y {
                return false;
            }
            at += n as u64;
        }
        true
    })
}

/// Holes travel as lengths: a 4 GiB sparse file (data at the start, in the
/// middle, unaligned near the end, then a trailing hole) arrives with its
/// size, its bytes and about its blocks, in well under the 22 s that
/// sending 4 GiB of zeros took; and a file of many small holes arrives
/// identical.
fn sparse_files_stay_sparse() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let r = router();
    let a = child(&r);
    let src = scratch("sparse-src");
    let dst = scratch("sparse-dst");
    let s = src.join("big");
    make_file(&s, 1 << 20);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&s).unwrap();
        f.write_all_at(&[0x5a; 64 << 10], 2 << 30).unwrap();
        f.write_all_at(b"0123456789", (3 << 30) + 5).unwrap();
        f.set_len(4 << 30).unwrap();
    }
    let d = dst.join("big");
    let t = std::time::Instant::now();
    let stat = put_file(
        &r,
        &a,
        &s,
        d.to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap();
    let took = t.elapsed();
    let (ms, md) = (
        std::fs::metadata(&s).unwrap(),
        std::fs::metadata(&d).unwrap(),
    );
    println!(
        "sparse 4 GiB: {:.3} s; blocks source {} destination {}",
        took.as_secs_f64(),
        ms.blocks(),
        md.blocks()
    );
    assert_eq!((stat.size, md.len()), (4 << 30, 4 << 30));
    // Same data, by each file's own map (holes read as zeros on both).
    let (rs, rd) = (data_regions(&s), data_regions(&d));
    assert!(
        same_bytes(&s, &d, &rs) && same_bytes(&s, &d, &rd),
        "{rs:?} vs {rd:?}"
    );
    // About the same blocks (allocation granularity may differ a little).
    assert!(
        md.blocks() <= ms.blocks() + 2048,
        "{} vs {}",
        md.blocks(),
        ms.blocks()
    );
    assert!(took < Duration::from_secs(10), "sparse 4 GiB took {took:?}");

    // Many small holes: 4 KiB of data, 4 KiB of hole, for 8 MiB.
    let s2 = src.join("holey");
    {
        let f = std::fs::File::create(&s2).unwrap();
        for i in 0..1024u64 {
            f.write_all_at(&[(i % 251) as u8 + 1; 4096], i * 8192)
                .unwrap();
        }
        f.set_len(8 << 20).unwrap();
    }
    let d2 = dst.join("holey");
    put_file(
        &r,
        &a,
        &s2,
        d2.to_str().unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(checksum(&d2), checksum(&s2));
    assert_eq!(data_regions(&d2), data_regions(&s2));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}
