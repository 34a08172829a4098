//! The broker: the one mio IO thread of a process.
//!
//! Each turn: drain commands from other threads (woken by a [`mio::Waker`]),
//! read ready streams into their decoders and route the frames, flush queued
//! writes of writable streams, reap exited children, and run the periodic
//! diagnostic dump. No user code runs here: user threads block in receivers,
//! and the agent's calls run on its main thread.

use crate::cmd::{Cmd, Registration, WAKER};
use crate::diag;
use crate::ids::IdMap;
use crate::router::{Blocked, Shared};
use crate::stream::{StreamId, StreamOut};
use crate::stream_core::{Inbound, Input};
use crate::sys;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bytes read from one stream per turn before other streams get a go.
const READ_BUDGET: usize = 4 << 20;
/// How long a disconnected child gets to exit before it is killed.
const REAP_GRACE: Duration = Duration::from_secs(2);
const REAP_TICK: Duration = Duration::from_millis(5);

struct StreamIn {
    out: Arc<StreamOut>,
    /// The stream protocol's input half: frames, reassembly.
    inbound: Inbound,
    rx: Arc<File>,
    separate_tx: Option<Arc<File>>,
    child: Option<Child>,
    detached: bool,
    want_write: bool,
    _keep: Vec<File>,
}

struct StderrLog {
    file: File,
    name: Arc<str>,
    partial: Vec<u8>,
}

struct Reap {
    child: Child,
    name: Arc<str>,
    /// `None` for detached children: reaped when they exit, never killed.
    kill_at: Option<Instant>,
}

/// What the broker does for the layers above the router without knowing
/// them (implemented by the context's state in `api.rs`).
pub(crate) trait Upkeep: Send + Sync {
    /// Runs once per turn (sends a changed log level to the children).
    fn turn(&self);
    /// The periodic diagnostic dump; `reaping` children are being reaped.
    fn dump(&self, reaping: usize);
    /// Whether this context is detached: when its parent goes it finishes
    /// its queued calls instead of exiting.
    fn is_detached(&self) -> bool;
    /// The last thing before the broker exits: drops higher layers' state
    /// (which may hold router handles).
    fn finish(&self);
}

pub(crate) struct Broker {
    poll: Poll,
    cmds: crossbeam_channel::Receiver<Cmd>,
    shared: Arc<Shared>,
    upkeep: Arc<dyn Upkeep>,
    streams: IdMap<StreamId, StreamIn>,
    stderrs: HashMap<Token, StderrLog>,
    reaping: Vec<Reap>,
    again: Vec<StreamId>,
    shutdown: Option<(Instant, Option<i32>)>,
    next_dump: Option<Instant>,
    timers: BinaryHeap<Timer>,
    timer_seq: u64,
    /// Bytes read (and flushed from queues) this turn: after bulk the
    /// broker does not spin.
    turn_bytes: usize,
    /// Streams not read until what they filled up is clear again.
    paused: IdMap<StreamId, Blocked>,
}

/// A scheduled function, ordered soonest first (then by scheduling order).
struct Timer {
    at: Instant,
    seq: u64,
    f: Box<dyn FnOnce() + Send>,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

fn rx_token(id: StreamId) -> Token {
    Token(id.0 * 4)
}
fn tx_token(id: StreamId) -> Token {
    Token(id.0 * 4 + 1)
}
fn err_token(id: StreamId) -> Token {
    Token(id.0 * 4 + 2)
}

impl Broker {
    pub(crate) fn new(
        poll: Poll,
        cmds: crossbeam_channel::Receiver<Cmd>,
        shared: Arc<Shared>,
        upkeep: Arc<dyn Upkeep>,
    ) -> Self {
        let next_dump = diag::dump_interval().map(|d| Instant::now() + d);
        Self {
            poll,
            cmds,
            shared,
            upkeep,
            streams: IdMap::default(),
            stderrs: HashMap::new(),
            reaping: Vec::new(),
            again: Vec::new(),
            shutdown: None,
            next_dump,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            turn_bytes: 0,
            paused: IdMap::default(),
        }
    }

    /// Runs until shut down.
    pub(crate) fn run(mut self) {
        crate::router::ON_BROKER.with(|b| b.set(true));
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout();
            // Right after activity, poll without sleeping for a moment: the
            // reply to what we just routed is likely microseconds away.
            let spun = events.is_empty()
                || timeout == Some(Duration::ZERO)
                || crate::spin::spin(None, || {
                    match self.poll.poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) if events.is_empty() => None,
                        _ => Some(()),
                    }
                })
                .is_none();
            let polled = if spun {
                self.poll.poll(&mut events, timeout)
            } else {
                Ok(())
            };
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("{}: poll failed, broker exits: {e}", self.shared.id.name);
                self.begin_shutdown(None);
                self.finish_shutdown();
                return;
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == WAKER {
                    self.drain_cmds();
                    continue;
                }
                let sid = StreamId(token.0 / 4);
                match token.0 % 4 {
                    0 => {
                        if ev.is_writable() {
                            self.flush(sid);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(sid);
                        }
                    }
                    1 => self.flush(sid),
                    _ => self.read_stderr(token),
                }
            }
            self.resume_clear();
            for sid in std::mem::take(&mut self.again) {
                self.read(sid);
            }
            crate::spin::note_len(std::mem::take(&mut self.turn_bytes));
            self.upkeep.turn();
            self.reap();
            self.fire_timers();
            if let Some(at) = self.next_dump {
                if Instant::now() >= at {
                    self.upkeep.dump(self.reaping.len());
                    self.next_dump = diag::dump_interval().map(|d| Instant::now() + d);
                }
            }
            if self.shutdown_done() {
                self.finish_shutdown();
                return;
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() || !self.cmds.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut t: Option<Duration> = None;
        let mut min = |d: Duration| t = Some(t.map_or(d, |t| t.min(d)));
        if !self.reaping.is_empty() {
            min(REAP_TICK);
        }
        if let Some(at) = self.next_dump {
            min(at.saturating_duration_since(now));
        }
        if let Some((at, _)) = self.shutdown {
            min(at.saturating_duration_since(now));
        }
        if let Some(timer) = self.timers.peek() {
            min(timer.at.saturating_duration_since(now));
        }
        t
    }

    fn drain_cmds(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Register(r) => self.register(r),
                Cmd::WantWrite(sid) => self.want_write(sid, true),
                Cmd::Detached(sid) => {
                    if let Some(s) = self.streams.get_mut(&sid) {
                        s.detached = true;
                    }
                }
                Cmd::Shutdown(exit) => self.begin_shutdown(exit),
                Cmd::Drained => {}
                Cmd::Timer(at, f) => {
                    self.timer_seq += 1;
                    self.timers.push(Timer {
                        at,
                        seq: self.timer_seq,
                        f,
                    });
                }
            }
        }
    }

    fn register(&mut self, r: Registration) {
        let sid = r.out.id;
        let fd = r.rx.as_raw_fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), rx_token(sid), Interest::READABLE)
        {
            log::error!("cannot poll stream to {}: {e}", r.out.name);
            self.shared.stream_closed(sid, "cannot poll");
            if let Some(child) = r.child {
                self.reaping.push(Reap {
                    child,
                    name: r.out.name.clone(),
                    kill_at: Some(Instant::now()),
                });
            }
            return;
        }
        for (i, err) in r.logs.into_iter().take(2).enumerate() {
            let efd = err.as_raw_fd();
            let tok = Token(err_token(sid).0 + i);
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&efd), tok, Interest::READABLE)
                .is_ok()
            {
                self.stderrs.insert(
                    tok,
                    StderrLog {
                        file: err,
                        name: r.out.name.clone(),
                        partial: Vec::new(),
                    },
                );
            }
        }
        let pending = r.out.pending_bytes() > 0;
        let mut inbound = Inbound::new(self.shared.me(), self.shared.id.max_message_size);
        *inbound.buffer_mut() = r.initial;
        self.streams.insert(
            sid,
            StreamIn {
                out: r.out,
                rx: r.rx,
                separate_tx: r.separate_tx,
                inbound,
                child: r.child,
                detached: false,
                want_write: false,
                _keep: r.keep,
            },
        );
        if pending {
            self.want_write(sid, true);
        }
        // Bytes that arrived with the greeting, and anything already waiting.
        self.read(sid);
    }

    fn want_write(&mut self, sid: StreamId, on: bool) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if s.want_write == on {
            return;
        }
        s.want_write = on;
        let reg = self.poll.registry();
        let r = match &s.separate_tx {
            Some(tx) => {
                let fd = tx.as_raw_fd();
                if on {
                    reg.register(&mut SourceFd(&fd), tx_token(sid), Interest::WRITABLE)
                } else {
                    reg.deregister(&mut SourceFd(&fd))
                }
            }
            None => {
                let fd = s.rx.as_raw_fd();
                let interest = if on {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                reg.reregister(&mut SourceFd(&fd), rx_token(sid), interest)
            }
        };
        if let Err(e) = r {
            log::error!("cannot change interest of {}: {e}", s.out.name);
        }
    }

    fn flush(&mut self, sid: StreamId) {
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        // Queued output is bulk: written bytes count like read ones, so a
        // broker that only feeds a bulk transfer (reading small acks) does
        // not spin after each turn, taking a CPU from the programs that
        // carry the data (ssh).
        let before = s.out.tx_bytes.load(Ordering::Relaxed);
        let flushed = s.out.flush();
        let written = s.out.tx_bytes.load(Ordering::Relaxed).wrapping_sub(before);
        self.turn_bytes += usize::try_from(written).unwrap_or(usize::MAX);
        match flushed {
            Ok(true) => self.want_write(sid, false),
            Ok(false) => {}
            Err(e) => {
                let reason = format!("write failed: {e}");
                self.close_stream(sid, &reason);
            }
        }
    }

    /// Resumes reading the paused streams whose blockage cleared.
    fn resume_clear(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let clear: Vec<StreamId> = self
            .paused
            .iter()
            .filter(|(_, b)| b.is_clear())
            .map(|(sid, _)| *sid)
            .collect();
        for sid in clear {
            self.paused.remove(&sid);
            self.again.push(sid);
        }
    }

    fn read(&mut self, sid: StreamId) {
        if self.paused.contains_key(&sid) {
            return;
        }
        let mut budget = READ_BUDGET;
        while self.route_buffered(sid) {
            if budget == 0 {
                self.again.push(sid);
                return;
            }
            let Some(s) = self.streams.get_mut(&sid) else {
                return;
            };
            let want = s.inbound.read_hint().clamp(64 << 10, READ_BUDGET);
            match sys::read_into_spare(&s.rx, s.inbound.buffer_mut(), want) {
                Ok(0) => return self.close_stream(sid, "end of stream"),
                Ok(n) => {
                    s.out.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    self.turn_bytes += n;
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_stream(sid, &format!("read failed: {e}")),
            }
        }
    }

    /// Routes the whole messages buffered for `sid` (the stream protocol
    /// puts split ones for this context back together). False once the
    /// stream is gone (closed here because it was corrupt, or earlier) or
    /// paused because what it routed to is full.
    fn route_buffered(&mut self, sid: StreamId) -> bool {
        loop {
            let Some(s) = self.streams.get_mut(&sid) else {
                return false;
            };
            let shared = &self.shared;
            let out = &s.out;
            let m = match s.inbound.poll(|m| shared.source_ok(m, out)) {
                Ok(Some(Input::Message(m))) => m,
                Ok(Some(Input::TooLarge { head, len })) => {
                    shared.refuse_too_large(&head, len);
                    continue;
                }
                Ok(None) => return true,
                Err(e) => {
                    let name = s.out.name.clone();
                    log::error!("{}: closing stream to {name}: {e}", self.shared.id.name);
                    self.close_stream(sid, &format!("corrupt stream: {e}"));
                    return false;
                }
            };
            let out = s.out.clone();
            if let Some(blocked) = self.shared.route_from(m, Some(&out)) {
                if !blocked.is_clear() {
                    self.paused.insert(sid, blocked);
                    return false;
                }
            }
        }
    }

    fn read_stderr(&mut self, token: Token) {
        let Some(l) = self.stderrs.get_mut(&token) else {
            return;
        };
        let mut chunk = [0u8; 8192];
        let eof = loop {
            match (&l.file).read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => l.partial.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        while let Some(pos) = l.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = l.partial.drain(..=pos).collect();
            log_stderr_line(&l.name, &line);
        }
        if eof {
            if !l.partial.is_empty() {
                log_stderr_line(&l.name, &l.partial);
            }
            let fd = l.file.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.stderrs.remove(&token);
        }
    }

    fn close_stream(&mut self, sid: StreamId, reason: &str) {
        let Some(s) = self.streams.remove(&sid) else {
            return;
        };
        self.paused.remove(&sid);
        let fd = s.rx.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if let (Some(tx), true) = (&s.separate_tx, s.want_write) {
            let fd = tx.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        if self.shutdown.is_none() {
            log::debug!(
                "{}: stream to {} closed: {reason}",
                self.shared.id.name,
                s.out.name
            );
        }
        let is_parent = s.out.is_parent;
        self.shared.stream_closed(sid, reason);
        if let Some(mut child) = s.child {
            match child.try_wait() {
                Ok(Some(_)) => {}
                _ => {
                    let kill_at = (!s.detached).then(|| Instant::now() + REAP_GRACE);
                    self.reaping.push(Reap {
                        child,
                        name: s.out.name.clone(),
                        kill_at,
                    });
                }
            }
        }
        if is_parent && self.shutdown.is_none() {
            self.parent_lost();
        }
    }

    /// The parent is gone: a detached agent finishes its queued calls, any
    /// other context shuts down and exits.
    fn parent_lost(&mut self) {
        if self.upkeep.is_detached() {
            log::debug!(
                "{}: parent gone; detached, finishing queued calls",
                self.shared.id.name
            );
            self.shared
                .remove_handler(crate::ids::Handle::CALL_FUNCTION);
        } else {
            self.begin_shutdown(Some(0));
        }
    }

    fn begin_shutdown(&mut self, exit: Option<i32>) {
        if self.shutdown.is_some() {
            return;
        }
        self.shared.begin_shutdown();
        self.shutdown = Some((
            Instant::now() + REAP_GRACE + Duration::from_millis(500),
            exit,
        ));
        // Children first: they see end-of-stream and exit, and are reaped
        // below; the parent stream stays open until that is done.
        let children: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.out.is_parent)
            .map(|(k, _)| *k)
            .collect();
        for sid in children {
            self.close_stream(sid, "shutting down");
        }
    }

    fn shutdown_done(&self) -> bool {
        match self.shutdown {
            None => false,
            Some((deadline, _)) => {
                self.reaping.iter().all(|r| r.kill_at.is_none()) || Instant::now() >= deadline
            }
        }
    }

    fn finish_shutdown(&mut self) {
        for r in &mut self.reaping {
            if r.kill_at.is_some() {
                log::warn!("{}: killing {} (did not exit)", self.shared.id.name, r.name);
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
        self.reaping.clear();
        let rest: Vec<StreamId> = self.streams.keys().copied().collect();
        for sid in rest {
            self.close_stream(sid, "shut down");
        }
        for (_, l) in self.stderrs.drain() {
            if !l.partial.is_empty() {
                log_stderr_line(&l.name, &l.partial);
            }
        }
        self.shared.fail_all_handlers();
        // Higher layers' state may hold router handles: break those cycles.
        self.upkeep.finish();
        if let Some((_, Some(code))) = self.shutdown {
            log::logger().flush();
            std::process::exit(code);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|t| t.at <= now) {
            if let Some(t) = self.timers.pop() {
                (t.f)();
            }
        }
    }

    fn reap(&mut self) {
        let now = Instant::now();
        self.reaping.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                log::debug!("{} exited: {status}", r.name);
                false
            }
            Ok(None) => {
                if r.kill_at.is_some_and(|t| now >= t) {
                    log::warn!(
                        "{} did not exit after its stream closed: killing it",
                        r.name
                    );
                    sys::kill(r.child.id());
                    let _ = r.child.wait();
                    return false;
                }
                true
            }
            Err(_) => false,
        });
    }
}

fn log_stderr_line(name: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    log::info!(target: "mitogen::stderr", "{name}: {text}");
}
