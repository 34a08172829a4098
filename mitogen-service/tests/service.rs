//! mitogen-service on real agent processes.

use mitogen_core::{
    CallCx, CallErrorKind, Context, ContextId, FnError, Function, Local, Policy, Registry, Router,
    RouterOptions,
};
use mitogen_service::{
    CHUNK, Checksum, FetchFrom, Service, ServiceCx, ServiceExt, ServiceMethod, WriteOptions, fetch,
    push_file, put_bytes, put_file, register_remote_path, register_remote_prefix,
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
method!(Slow, "slow", u64 => (), Policy::Any, |_, ms| {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
});
// Registered nowhere / wrong arguments.
method!(NoSuchMethod, "nope", () => (), Policy::Any, |_, ()| Ok(()));
method!(AddWrongArgs, "add", () => u64, Policy::Any, |_, ()| Ok(0));

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
            Err(e) => format!("{:?}", e.kind),
        })
    }
);
function!(WaitPushed, "svc-test::wait_pushed", (String, u64) => bool, |cx, (p, ms)| {
    Ok(mitogen_service::wait_pushed(cx.router(), &p, Duration::from_millis(ms)))
});

fn register(reg: &mut Registry) {
    mitogen_service::register_with(reg, |s| {
        s.add::<Add>().add::<AdminAdd>().add::<Slow>();
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
    let mut data = Vec::with_capacity(size.min(1 << 20));
    let mut x = 0x1234_5678u32;
    let mut f = std::fs::File::create(path).unwrap();
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
    let kinds = [
        a.call_service::<GhostPing>(&()).unwrap_err().kind,
        a.call_service::<NoSuchMethod>(&()).unwrap_err().kind,
        a.call_service::<AddWrongArgs>(&()).unwrap_err().kind,
    ];
    assert!(
        matches!(&kinds[0], CallErrorKind::UnknownService(s) if s == "test.ghost"),
        "{kinds:?}"
    );
    assert!(
        matches!(&kinds[1], CallErrorKind::UnknownMethod(m) if m == "nope"),
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
    let slow = a.call_service_async::<Slow>(&1500).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(a.call_service::<Add>(&1).unwrap(), 1);
    assert_eq!(a.call::<Echo>(&7).unwrap(), 7);
    assert!(
        slow.receiver().try_recv().unwrap().is_none(),
        "the slow method should still be running"
    );
    slow.wait().unwrap();
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
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        kill9(apid);
    });
    let e = put_file(
        &r,
        &a,
        &src.join("big"),
        dst.join("big").to_str().unwrap(),
        &slow_opts(),
        |_| {},
    );
    killer.join().unwrap();
    assert!(e.is_err(), "transfer should fail");
    assert!(wait_until(Duration::from_secs(5), || process_gone(apid)));
    assert_eq!(entries(&dst), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
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
    std::thread::sleep(Duration::from_millis(500));
    kill9(apid);
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
    mitogen_service::FileService::local(&r)
        .unwrap()
        .register_path(src.join("f"))
        .unwrap();
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
    std::thread::sleep(Duration::from_millis(100));
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
    make_file(&src.join("gib"), 1 << 30);
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
    let mut answered = 0;
    while !transfer.is_finished() {
        assert_eq!(
            a.call_timeout::<Echo>(&answered, Duration::from_secs(10))
                .unwrap(),
            answered
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let stat = transfer.join().unwrap().unwrap();
    assert_eq!(stat.size, 1 << 30);
    assert!(
        answered >= 3,
        "only {answered} calls were made during the transfer"
    );
    eprintln!("    {answered} calls answered during the 1 GiB transfer");
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
    let dest = |k: usize| dst.join(format!("t{k}")).display().to_string();
    assert!(!targets[0].call::<WaitPushed>(&(dest(0), 10)).unwrap());
    let (tx0, _) = r.stream_bytes(i.id()).unwrap();
    // Each target writes its own path (they share this machine's disk).
    let results: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(k, t)| {
            push_file(
                &r,
                &src.join("f"),
                &dest(k),
                std::slice::from_ref(t),
                &WriteOptions::default(),
            )
            .remove(0)
        })
        .collect();
    for res in results {
        assert_eq!(res.unwrap().size, size as u64);
    }
    let (tx1, _) = r.stream_bytes(i.id()).unwrap();
    let over_first_link = tx1 - tx0;
    eprintln!("    8 targets x {size} B: {over_first_link} B crossed the first link");
    assert!(
        over_first_link < size as u64 * 3 / 2,
        "{over_first_link} bytes for a {size}-byte file"
    );
    for k in 0..8 {
        assert_eq!(checksum(Path::new(&dest(k))), checksum(&src.join("f")));
    }
    assert!(targets[3].call::<WaitPushed>(&(dest(3), 10)).unwrap());
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
