//! `Shared`: a context's router state and the driver of its
//! [`RouterCore`].
//!
//! Routing decisions, routes, handlers, policies and stream loss live in the
//! IO-free core ([`crate::machine`]). This file carries out what the core
//! decides: frames go to [`StreamOut`]s (written straight to the socket by
//! the routing thread when nothing is queued), deliveries go to channels or
//! handler functions, with backpressure (waiting for room, pausing the
//! input that filled a queue) applied here.
//!
//! [`crate::layer::LayerRouter::route`] may be called from any thread; the core is held
//! under one lock only while it decides, never while actions run.

use crate::cmd::{BrokerTx, Cmd};
use crate::ids::{ContextId, Handle};
use crate::machine::{Action, Handler, RouterCore};
use crate::message::{self, Message};
use crate::policy::Source;
use crate::stream::{Closed, StreamId, StreamOut};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

/// A handler function: the message, the stream it came on, its source.
pub(crate) type HandlerFn = dyn Fn(Message, Option<StreamId>, &Source) + Send + Sync;

/// Where a handler's messages go.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A channel read by a [`crate::Receiver`] (with its queue's gauge) or
    /// by the agent's executor.
    Chan(crossbeam_channel::Sender<Message>, Option<Arc<Gauge>>),
    /// Drops what arrives: an abandoned call's reply handle, kept so that
    /// [`crate::Router::pending_calls`] counts the call until it ends.
    Discard,
    /// A function run on the routing thread (internal handlers only: it must
    /// not block).
    Fn(Arc<HandlerFn>),
}

/// Bytes waiting in a receiver's queue, for backpressure: over
/// [`RECV_HIGH_WATER`] the broker stops reading the stream that fed it until
/// the receiver has taken it back under [`RECV_LOW_WATER`].
pub(crate) struct Gauge {
    bytes: AtomicUsize,
    blocked: AtomicBool,
    broker: BrokerTx,
}

/// Queued bytes (payload plus a fixed cost per message) above which a
/// receiver's stream pauses.
pub const RECV_HIGH_WATER: usize = 32 << 20;
/// Queued bytes under which it resumes.
pub const RECV_LOW_WATER: usize = 16 << 20;

fn queue_cost(msg: &Message) -> usize {
    msg.data.len() + 64
}

impl Gauge {
    pub(crate) fn new(broker: BrokerTx) -> Arc<Self> {
        Arc::new(Self {
            bytes: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
            broker,
        })
    }

    /// A message was queued; true when the queue is now over its mark.
    fn add(&self, msg: &Message) -> bool {
        let now = self.bytes.fetch_add(queue_cost(msg), Ordering::Relaxed) + queue_cost(msg);
        if now > RECV_HIGH_WATER {
            self.blocked.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// A message was taken from the queue.
    pub(crate) fn take(&self, msg: &Message) {
        let before = self.bytes.fetch_sub(queue_cost(msg), Ordering::Relaxed);
        let now = before.saturating_sub(queue_cost(msg));
        if now <= RECV_LOW_WATER && self.blocked.swap(false, Ordering::AcqRel) {
            self.broker.send(Cmd::Drained);
        }
    }

    fn is_clear(&self) -> bool {
        self.queued() <= RECV_LOW_WATER
    }

    pub(crate) fn queued(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What a routed message filled up: the broker stops reading the stream it
/// came from until this is clear again.
#[derive(Clone)]
pub(crate) enum Blocked {
    /// The stream it was forwarded to is over its high-water mark.
    Stream(Arc<StreamOut>),
    /// The receiver it was delivered to is over its mark.
    Queue(Arc<Gauge>),
}

impl Blocked {
    /// Whether the blockage is gone (under the low-water mark, or closed).
    pub(crate) fn is_clear(&self) -> bool {
        match self {
            Self::Stream(s) => s.pending_bytes() <= crate::stream_core::LOW_WATER,
            Self::Queue(g) => g.is_clear(),
        }
    }
}

/// What routing one message did.
enum Routed {
    Done,
    /// It filled up a stream or a receiver queue.
    Filled(Blocked),
    /// The stream stayed full past the deadline; the message was dropped.
    Stalled(Stalled),
}

/// A message could not be queued: the stream it goes to stayed over its
/// high-water mark until the deadline (the peer reads too slowly, or not at
/// all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stream to {stream} stayed full (over its high-water mark) until the deadline")]
pub struct Stalled {
    /// The stream's name (the context at its other end).
    pub stream: String,
}

thread_local! {
    /// Set on the broker thread, which must never wait for room.
    pub(crate) static ON_BROKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The actions vector of this thread's outermost route, kept for reuse.
    static ACTIONS: std::cell::Cell<Actions> = const { std::cell::Cell::new(Vec::new()) };
}

/// How long a thread waits for room on a full stream before the message is
/// answered as undeliverable.
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A handler as this driver registers it.
pub(crate) type HandlerEntry = Handler<Sink>;

pub(crate) use crate::machine::Identity;

/// The core as this driver instantiates it.
pub(crate) type Core = RouterCore<Sink, Arc<StreamOut>>;
type Actions = Vec<Action<Sink, Arc<StreamOut>>>;

/// What drives a context's [`RouterCore`]: the core under its lock, and
/// what carrying out its actions needs. Everything else a context keeps
/// (registry, id allocator, call and log state, extensions) belongs to the
/// modules that use it (see `api::Node`).
pub(crate) struct Shared {
    /// This context's identity: the same `Arc` the core holds (stored once),
    /// read here without taking the core's lock.
    pub(crate) id: Arc<Identity>,
    /// The routing state machine, locked only while it decides.
    pub(crate) core: Mutex<Core>,
    /// The next dynamic handle [`Shared::alloc_handle`] gives out.
    next_handle: AtomicU32,
    /// The broker's command queue (detached children; receivers' gauges
    /// tell it when a paused stream may resume).
    pub(crate) broker: BrokerTx,
    /// Set when shutdown begins; read without the core's lock (receivers
    /// made after it fail at once, connects are refused).
    shut_down: AtomicBool,
}

impl Shared {
    pub(crate) fn new(id: Identity, broker: BrokerTx) -> Self {
        let id = Arc::new(id);
        Self {
            core: Mutex::new(RouterCore::new(id.clone())),
            id,
            next_handle: AtomicU32::new(Handle::FIRST_DYNAMIC.0),
            broker,
            shut_down: AtomicBool::new(false),
        }
    }

    pub(crate) fn me(&self) -> ContextId {
        self.id.me
    }

    pub(crate) fn parent(&self) -> Option<ContextId> {
        self.id.ancestors.first().copied()
    }

    pub(crate) fn alloc_handle(&self) -> Handle {
        Handle(self.next_handle.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn add_handler(&self, handle: Handle, entry: HandlerEntry) {
        self.core.lock().add_handler(handle, entry);
    }

    pub(crate) fn remove_handler(&self, handle: Handle) {
        let gone = self.core.lock().remove_handler(handle);
        drop(gone);
    }

    /// Keeps a one-shot handler registered but drops what it receives: the
    /// call it waits for is still running remotely.
    pub(crate) fn abandon_handler(&self, handle: Handle) -> bool {
        self.core.lock().replace_sink(handle, Sink::Discard)
    }

    pub(crate) fn name_of(&self, id: ContextId) -> Arc<str> {
        self.core.lock().name_of(id)
    }

    /// Routes a message sent by a thread of this process. A thread other
    /// than the broker waits (at most [`SEND_TIMEOUT`]) while the stream it
    /// goes to is over its high-water mark.
    pub(crate) fn route(&self, msg: Message) {
        self.route_inner(msg, None, Instant::now() + SEND_TIMEOUT);
    }

    /// [`Shared::route`] with a deadline for the wait for room; `Err` when
    /// the deadline passed and the message was dropped (answered dead).
    pub(crate) fn route_until(&self, msg: Message, deadline: Instant) -> Result<(), Stalled> {
        match self.route_inner(msg, None, deadline) {
            Routed::Stalled(s) => Err(s),
            _ => Ok(()),
        }
    }

    /// Routes a message that arrived on `from`. Returns what the message
    /// filled up, if anything: the broker then stops reading `from` until
    /// it is clear.
    pub(crate) fn route_from(&self, msg: Message, from: Option<&StreamOut>) -> Option<Blocked> {
        match self.route_inner(msg, from, Instant::now() + SEND_TIMEOUT) {
            Routed::Filled(b) => Some(b),
            _ => None,
        }
    }

    fn route_inner(&self, msg: Message, from: Option<&StreamOut>, deadline: Instant) -> Routed {
        // The actions vector is reused per thread (a nested route, from a
        // handler run below, finds it taken and makes its own).
        let mut actions = ACTIONS.with(std::cell::Cell::take);
        self.core
            .lock()
            .route(msg, from.map(|f| f.id), &mut actions);
        let r = self.perform(&mut actions, from, deadline);
        ACTIONS.with(|a| a.set(actions));
        r
    }

    /// Carries out what the core decided, in order, leaving `actions` empty.
    fn perform(
        &self,
        actions: &mut Actions,
        from: Option<&StreamOut>,
        deadline: Instant,
    ) -> Routed {
        let mut result = Routed::Done;
        for action in actions.drain(..) {
            let r = match action {
                Action::Transmit { out, msg, .. } => self.transmit(&out, msg, from, deadline),
                Action::Deliver {
                    sink,
                    msg,
                    from: via,
                    source,
                } => self.deliver(sink, msg, via, &source, from.is_some()),
                Action::Detached(sid) => {
                    self.broker_cmd(Cmd::Detached(sid));
                    Routed::Done
                }
                Action::Dropped { msg, from: f, why } => {
                    self.log_dropped(&msg, f.is_some() || from.is_some(), why);
                    Routed::Done
                }
            };
            if matches!(result, Routed::Done) {
                result = r;
            }
        }
        result
    }

    fn log_dropped(&self, msg: &Message, from_stream: bool, why: &'static str) {
        let name = &self.id.name;
        if why == message::DEAD_TOO_LARGE {
            log::warn!(
                "{name}: {why}: {msg:?} (limit {})",
                self.id.max_message_size
            );
        } else if why == message::DEAD_INVALID_HANDLE {
            log::debug!("{name}: {why} for {msg:?}");
        } else if why == message::DEAD_REFUSED {
            log::warn!("{name}: policy refused {msg:?}");
        } else {
            let origin = if from_stream {
                "a stream"
            } else {
                "this context"
            };
            log::warn!("{name}: dropped {msg:?} from {origin}: {why}");
        }
    }

    fn transmit(
        &self,
        out: &Arc<StreamOut>,
        msg: Message,
        from: Option<&StreamOut>,
        deadline: Instant,
    ) -> Routed {
        if from.is_none()
            && out.is_full()
            && !ON_BROKER.with(std::cell::Cell::get)
            && !out.wait_room(&msg, deadline)
        {
            let stalled = Stalled {
                stream: out.name.to_string(),
            };
            log::warn!("{}: {stalled}: dropped {msg:?}", self.id.name);
            if let Some(dead) = out.stalled(&msg, &stalled.to_string()) {
                self.route(dead);
            }
            return Routed::Stalled(stalled);
        }
        if let Err(Closed(dead)) = out.send(&msg) {
            if let Some(dead) = dead {
                self.route(dead);
            }
            return Routed::Done;
        }
        match out.is_full() {
            true => Routed::Filled(Blocked::Stream(out.clone())),
            false => Routed::Done,
        }
    }

    fn deliver(
        &self,
        sink: Sink,
        msg: Message,
        via: Option<StreamId>,
        source: &Source,
        from_stream: bool,
    ) -> Routed {
        match sink {
            Sink::Chan(tx, gauge) => {
                let full = gauge.as_ref().is_some_and(|g| g.add(&msg));
                let _ = tx.send(msg);
                match (full && from_stream, gauge) {
                    (true, Some(g)) => Routed::Filled(Blocked::Queue(g)),
                    _ => Routed::Done,
                }
            }
            Sink::Fn(f) => {
                f(msg, via, source);
                Routed::Done
            }
            Sink::Discard => Routed::Done,
        }
    }

    /// Answers a message of `len` payload bytes that is over
    /// `max_message_size` (see [`RouterCore::refuse_too_large`]).
    pub(crate) fn refuse_too_large(&self, msg: &Message, len: usize) {
        let mut actions = Actions::new();
        self.core.lock().refuse_too_large(msg, len, &mut actions);
        self.perform(&mut actions, None, Instant::now() + SEND_TIMEOUT);
    }

    /// Whether `msg`, arriving on `from`, passes the reverse-path check
    /// (asked by the stream's [`crate::stream_core::Inbound`] before it
    /// keeps the frames of a split message).
    pub(crate) fn source_ok(&self, msg: &Message, from: &StreamOut) -> bool {
        self.core.lock().source_ok(msg, from.id)
    }

    /// Drops every handler, waking its receiver with "router shut down".
    pub(crate) fn fail_all_handlers(&self) {
        let all = self.core.lock().drain_handlers();
        for (handle, h) in all {
            if let Sink::Chan(tx, _) = h.sink {
                let mut dead =
                    Message::bytes(self.id.me, handle, message::DEAD_SHUTDOWN.as_bytes());
                dead.reply_to = Handle::IS_DEAD;
                dead.src_id = self.id.me;
                dead.auth_id = self.id.me;
                let _ = tx.send(dead);
            }
        }
    }

    /// A new stream: the core records it (and announces a child upward).
    pub(crate) fn stream_opened(&self, out: Arc<StreamOut>) {
        let link = crate::machine::Link {
            remote: out.remote_id,
            is_parent: out.is_parent,
            name: out.name.clone(),
            out: out.clone(),
        };
        let mut actions = Actions::new();
        self.core.lock().stream_opened(out.id, link, &mut actions);
        self.perform(&mut actions, None, Instant::now() + SEND_TIMEOUT);
    }

    /// The stream is gone: drop its routes and tell everyone who cares.
    /// Returns the context ids that became unreachable.
    pub(crate) fn stream_closed(&self, sid: StreamId, reason: &str) -> Vec<ContextId> {
        let mut actions = Actions::new();
        let lost = {
            let mut core = self.core.lock();
            if let Some(link) = core.link(sid) {
                link.out.close();
            }
            core.stream_closed(sid, reason, &mut actions)
        };
        self.perform(&mut actions, None, Instant::now() + SEND_TIMEOUT);
        lost
    }

    /// Stops announcing losses: every stream is about to close.
    pub(crate) fn begin_shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.core.lock().begin_shutdown();
    }

    pub(crate) fn stream_by_context(&self, id: ContextId) -> Option<Arc<StreamOut>> {
        self.core.lock().stream_to(id).map(|(_, l)| l.out.clone())
    }

    /// The streams to this context's children.
    pub(crate) fn child_streams(&self) -> Vec<Arc<StreamOut>> {
        self.core
            .lock()
            .links()
            .filter(|(_, l)| !l.is_parent)
            .map(|(_, l)| l.out.clone())
            .collect()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn broker_cmd(&self, cmd: Cmd) {
        self.broker.send(cmd);
    }
}
