//! Test support shared by every mitogen-rs crate.
//!
//! Integration tests that start agents must run the agent entry point before
//! any test code (the test binary is the agent binary), and they must not run
//! in parallel if leaks are to be counted per test. So each crate has one
//! integration test binary with `harness = false` whose `main` calls
//! `mitogen_core::agent_main(register)` and then [`run`], a small sequential
//! runner that, after every test, checks that no thread, file descriptor or
//! child process was left behind (like Python Mitogen's test base).
//! Its output follows libtest's, so `cargo test` summaries read the same.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One test: a name and a function that panics on failure.
#[derive(Debug, Clone, Copy)]
pub struct Test {
    /// The name filters match against.
    pub name: &'static str,
    /// The body.
    pub run: fn(),
    /// Run only with `--ignored` / `--include-ignored` (long stress tests).
    pub ignored: bool,
}

/// Builds a `&[Test]` from function paths: `tests![a, b, #[ignore] c]`.
#[macro_export]
macro_rules! tests {
    ($($(#[$ig:ident])? $f:path),* $(,)?) => {
        &[$($crate::Test { name: stringify!($f), run: $f, ignored: $crate::tests!(@ig $($ig)?) }),*]
    };
    (@ig ignore) => { true };
    (@ig) => { false };
}

/// What a process holds that a test must give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Open file descriptors, with what they point at.
    pub fds: BTreeSet<(i32, String)>,
    /// Thread count.
    pub threads: usize,
    /// Child processes (live or zombie): pid and command name.
    pub children: BTreeSet<(u32, String)>,
}

impl Resources {
    /// Reads the current process's resources from /proc.
    pub fn snapshot() -> Self {
        let mut fds = BTreeSet::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            for e in dir.flatten() {
                let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                // The directory handle itself shows up as a dangling fd.
                if let Ok(target) = std::fs::read_link(e.path()) {
                    fds.insert((fd, target.display().to_string()));
                }
            }
        }
        let threads = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0);
        Self {
            fds,
            threads,
            children: children_of(std::process::id()),
        }
    }

    /// What `self` has that `before` had not.
    pub fn leaked_since(&self, before: &Self) -> Option<String> {
        let fds: Vec<_> = self.fds.difference(&before.fds).collect();
        let kids: Vec<_> = self.children.difference(&before.children).collect();
        let mut out = Vec::new();
        if !fds.is_empty() {
            out.push(format!("leaked fds: {fds:?}"));
        }
        if self.threads > before.threads {
            out.push(format!(
                "leaked threads: {} -> {}",
                before.threads, self.threads
            ));
        }
        if !kids.is_empty() {
            out.push(format!("leaked child processes: {kids:?}"));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }
}

/// Child processes of `pid` (including zombies), from /proc.
pub fn children_of(pid: u32) -> BTreeSet<(u32, String)> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parens.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let _state = rest.next();
        if rest.next().and_then(|pp| pp.parse::<u32>().ok()) == Some(pid) {
            out.insert((p, comm));
        }
    }
    out
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                == Some("Z")
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A captured log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Its level.
    pub level: log::Level,
    /// Its target.
    pub target: String,
    /// Its formatted message.
    pub message: String,
}

struct Capture {
    records: Mutex<Vec<Captured>>,
    echo: bool,
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        let c = Captured {
            level: r.level(),
            target: r.target().to_owned(),
            message: r.args().to_string(),
        };
        if self.echo {
            eprintln!("[{} {}] {}", c.level, c.target, c.message);
        }
        if let Ok(mut v) = self.records.lock() {
            v.push(c);
        }
    }
    fn flush(&self) {}
}

static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

/// Installs the capturing logger (idempotent). `MITOGEN_TEST_LOG=1` also
/// echoes records to stderr.
pub fn capture_logs() {
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture {
            records: Mutex::new(Vec::new()),
            echo: std::env::var_os("MITOGEN_TEST_LOG").is_some(),
        }));
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Info);
        c
    });
}

/// Takes every record captured so far.
pub fn take_logs() -> Vec<Captured> {
    CAPTURE
        .get()
        .map(|c| std::mem::take(&mut *c.records.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default()
}

static SKIPPED: Mutex<Option<String>> = Mutex::new(None);

/// Reports a missing prerequisite: a panic under `CI=true` (where every
/// prerequisite is installed), else [`skip`].
pub fn skip_unless_ci(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    skip(reason);
}

/// Marks the running test as skipped (a prerequisite is missing): [`run`]
/// prints it as `skipped` with `reason` and counts it apart from passes.
/// The test should return right after calling this. Also prints a loud
/// `SKIPPED:` line to stderr.
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    let mut s = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    s.get_or_insert_with(|| reason.to_owned());
}

fn take_skip() -> Option<String> {
    SKIPPED.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Runs `tests` one at a time with a leak check after each, printing
/// libtest-style lines, and exits (101 if any failed).
pub fn run(tests: &[Test]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exact = flag("--exact");
    let (only_ignored, include_ignored) = (flag("--ignored"), flag("--include-ignored"));
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        t.name == f.as_str()
                    } else {
                        t.name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if flag("--list") {
        for t in &selected {
            println!("{}: test", t.name);
        }
        std::process::exit(0);
    }
    capture_logs();
    let started = Instant::now();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed, mut ignored, mut skipped) = (0, Vec::new(), 0, 0);
    for t in &selected {
        let run_it = if only_ignored {
            t.ignored
        } else {
            include_ignored || !t.ignored
        };
        if !run_it {
            println!("test {} ... ignored", t.name);
            ignored += 1;
            continue;
        }
        let before = Resources::snapshot();
        take_skip();
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(t.run));
        let mut leak = None;
        if result.is_ok() {
            // Threads and reaped children go away asynchronously: allow a moment.
            let ok = wait_until(Duration::from_secs(5), || {
                Resources::snapshot().leaked_since(&before).is_none()
            });
            if !ok {
                leak = Resources::snapshot().leaked_since(&before);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let skip = take_skip();
        match (result, leak) {
            (Ok(()), None) if skip.is_some() => {
                let why = skip.unwrap_or_default();
                println!("test {} ... skipped ({why})", t.name);
                skipped += 1;
            }
            (Ok(()), None) => {
                println!("test {} ... ok ({secs:.2}s)", t.name);
                passed += 1;
            }
            (Ok(()), Some(leak)) => {
                println!("test {} ... FAILED ({secs:.2}s)\n    {leak}", t.name);
                failed.push(t.name);
            }
            (Err(_), _) => {
                println!("test {} ... FAILED ({secs:.2}s)", t.name);
                failed.push(t.name);
            }
        }
        let _ = take_logs();
    }
    let filtered = tests.len() - selected.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for f in &failed {
            println!("    {f}");
        }
    }
    let status = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {status}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered} filtered out; {skipped} skipped; finished in {:.2}s\n",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}

/// Deterministic pseudo-random inputs for fuzz-body smoke tests: `count`
/// byte strings of lengths `0..max_len` cycling, from xorshift64 seeded with
/// `seed`, each passed to `body`.
pub fn smoke_inputs(seed: u64, count: usize, max_len: usize, mut body: impl FnMut(&[u8])) {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for len in 0..count {
        let data: Vec<u8> = (0..len % max_len.max(1)).map(|_| next() as u8).collect();
        body(&data);
    }
}

/// Sends SIGKILL to `pid` (ignoring "no such process").
pub fn kill9(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

pub mod ansible;
pub mod compare;
pub mod mesh;
pub mod sshd;
pub use sshd::{Sshd, netns_available, sshd_available};
