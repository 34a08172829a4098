//! The agent side: what a process started with `--mitogen-agent` does.
//!
//! It moves its stdin/stdout (the channel to its parent) out of the way of
//! user code, greets, reads its configuration, starts its router and then
//! runs calls on the main thread until told to shut down or its parent
//! disappears. It never returns.
//!
//! Started with `--mitogen-check` instead, it prints the SHA-256 of its own
//! image (`MITOGEN-RS-IMAGE <hex>`, read from `/proc/self/exe` where there
//! is one) and exits: the bootstrap's first stage runs this before it runs
//! a cached or uploaded agent (see [`crate::transport::bootstrap`]).

use crate::api::{NewStream, add_stream, fn_handler, start};
use crate::call::{Executor, Registry};
use crate::cmd::Cmd;
use crate::ids::Handle;
use crate::message::codec::Decoder;
use crate::policy::Policy;
use crate::router::{HandlerEntry, Sink};
use crate::transport::{AgentConfig, greeting_line, local::AGENT_ARG};
use crate::{Router, sys};
use bytes::BytesMut;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an agent waits for its configuration after greeting.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(60);

/// The argument that makes a program print the hash of its own image.
pub(crate) const CHECK_ARG: &str = "--mitogen-check";

/// Whether this process was started as an agent.
pub fn is_agent() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == AGENT_ARG)
}

/// Runs as an agent if this process was started as one (never returns
/// then); otherwise returns at once. [`crate::init`] calls this first.
///
/// Call it at the top of `main` (or of a custom test harness) with the same
/// registration as the controller.
pub fn agent_main(register: impl FnOnce(&mut Registry)) {
    if std::env::args_os().nth(1).is_some_and(|a| a == CHECK_ARG) {
        self_check();
    }
    if !is_agent() {
        return;
    }
    let registry = Registry::new(register);
    match run(registry) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("mitogen agent {}: {e}", std::process::id());
            std::process::exit(70);
        }
    }
}

enum Never {}

/// Prints `MITOGEN-RS-IMAGE <sha256>` of the file this process runs from
/// and exits 0, or says why it cannot and exits 1. Reading the image the
/// kernel mapped (`/proc/self/exe`), not a path, means a file renamed over
/// the path meanwhile is not the one hashed.
fn self_check() -> ! {
    let image = File::open("/proc/self/exe")
        .or_else(|_| std::env::current_exe().and_then(File::open))
        .and_then(crate::transport::agent_image::sha256_reader);
    match image {
        Ok((hex, _)) => {
            println!("MITOGEN-RS-IMAGE {hex}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("mitogen agent: cannot read its own image: {e}");
            std::process::exit(1)
        }
    }
}

fn run(registry: Registry) -> Result<Never, crate::Error> {
    let err = |what: &str, e: std::io::Error| crate::Error::Agent(format!("{what}: {e}"));
    let rx = File::from(sys::dup_cloexec(rustix::stdio::stdin()).map_err(|e| err("dup stdin", e))?);
    let tx =
        File::from(sys::dup_cloexec(rustix::stdio::stdout()).map_err(|e| err("dup stdout", e))?);
    sys::detach_stdio().map_err(|e| err("redirect stdio", e))?;
    let _ = sys::raise_nofile_limit();
    let same = same_file(&rx, &tx);
    (&tx)
        .write_all(greeting_line(&registry).as_bytes())
        .map_err(|e| err("greet", e))?;
    let (config, rest) = read_config(&rx)?;
    let level = crate::logfwd::level_filter(config.log_level);
    if std::env::var_os(crate::spin::SPIN_ENV).is_none() {
        crate::spin::set_window(config.spin_us);
    }
    if let Some(secs) = config.dump_secs.filter(|s| *s > 0.0 && s.is_finite()) {
        crate::diag::set_dump_interval(Some(Duration::from_secs_f64(secs)));
    }
    let parent = config
        .identity
        .ancestors
        .first()
        .copied()
        .ok_or_else(|| crate::Error::Agent("config names no parent".into()))?;
    let name: Arc<str> = format!("parent {parent}").into();
    let node = start(config.identity, Arc::new(registry))?;
    node.log.set(level);
    let forwarding = log::set_boxed_logger(Box::new(crate::logfwd::ForwardLogger {
        shared: Arc::downgrade(&node.shared),
    }))
    .is_ok();
    log::set_max_level(level);
    fn_handler(
        &node,
        Handle::SET_LOG_LEVEL,
        Policy::ParentAuthority,
        "set-log-level",
        |n, m, _| {
            if let Ok(v) = m.decode::<u8>() {
                log::set_max_level(crate::logfwd::level_filter(v));
                // Relays it to this context's children.
                n.log.sync(&n.shared);
            }
        },
    );
    install_panic_hook();

    let (call_tx, call_rx) = crossbeam_channel::unbounded();
    node.shared.add_handler(
        Handle::CALL_FUNCTION,
        HandlerEntry {
            policy: Policy::ParentAuthority,
            sink: Sink::Chan(call_tx, None),
            persist: true,
            respondent: None,
            label: "call-function",
            since: Instant::now(),
        },
    );
    fn_handler(
        &node,
        Handle::SHUTDOWN,
        Policy::ParentAuthority,
        "shutdown",
        |n, _, _| {
            log::debug!("{}: shutdown requested", n.shared.id.name);
            n.shared.broker_cmd(Cmd::Shutdown(Some(0)));
        },
    );
    // Keyed by the (verified) sender: a context can cancel only its own calls.
    fn_handler(
        &node,
        Handle::CANCEL_CALL,
        Policy::Any,
        "cancel-call",
        |n, m, _| {
            if let Ok(handle) = m.decode::<Handle>() {
                n.calls.cancel(m.src_id, handle);
            }
        },
    );
    // Every handler must be in place before the parent stream is read: the
    // parent may send as soon as it has configured us.
    node.registry
        .run_start_hooks(&Router::borrowed(node.clone()));
    for f in [&rx, &tx] {
        sys::set_nonblocking(f, true).map_err(|e| err("non-blocking", e))?;
        // Through sshd or sudo the channel is a pair of pipes: 1 MiB
        // buffers instead of 64 KiB mean fewer wake-ups on both sides.
        sys::grow_pipe(f, 1 << 20);
    }
    add_stream(
        &node.shared,
        NewStream {
            remote: parent,
            name,
            is_parent: true,
            rx,
            tx: (!same).then_some(tx),
            child: None,
            logs: Vec::new(),
            keep: Vec::new(),
            initial: rest,
        },
    );
    if !forwarding {
        // The program installed its own logger before `init`: it runs here
        // too, and its records reach the controller only as stderr lines.
        crate::logfwd::warn_not_forwarding(&node.shared);
    }
    let mut exec = Executor::new(Router::borrowed(node.clone()));
    while let Some(msg) =
        crate::spin::spin(None, || call_rx.try_recv().ok()).or_else(|| call_rx.recv().ok())
    {
        exec.handle(msg);
    }
    // Only a detached agent whose parent is gone gets here: its queued calls
    // are done, so it shuts down (the broker exits the process).
    drop(exec);
    node.shared.broker_cmd(Cmd::Shutdown(Some(0)));
    let handle = node.broker_thread.lock().take();
    if let Some(h) = handle {
        let _ = h.join();
    }
    std::process::exit(0);
}

fn read_config(rx: &File) -> Result<(AgentConfig, BytesMut), crate::Error> {
    let deadline = Instant::now() + CONFIG_TIMEOUT;
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new(16 << 20);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(msg)) => {
                let config = msg.decode::<AgentConfig>()?;
                return Ok((config, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(crate::Error::Agent(format!("bad config frame: {e}"))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !sys::wait_readable(rx, left).unwrap_or(false) {
            return Err(crate::Error::Agent(
                "no configuration from the parent in time".into(),
            ));
        }
        match sys::read_into_spare(rx, &mut buf, 4096) {
            Ok(0) => {
                return Err(crate::Error::Agent(
                    "parent closed the stream before configuring".into(),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(crate::Error::Agent(format!("reading config: {e}"))),
        }
    }
}

fn same_file(a: &File, b: &File) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Panics in agents are logged (and so forwarded) instead of only printed.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let msg = crate::call::panic_message(info.payload());
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!(
            "thread '{}' panicked{loc}: {msg}",
            thread.name().unwrap_or("?")
        );
    }));
}
