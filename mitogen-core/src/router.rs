//! The router: routes, handlers, policies and source verification.
//!
//! [`crate::Router::route`] may be called from any thread. For a message that
//! arrived on a stream the broker first checks the reverse path: the stream
//! must be the route back to both `src_id` and `auth_id` (a context that is
//! not routed below this one is reached through the parent). Then:
//!
//! ```text
//!  dst_id == me ──► handler table ──► policy ok? ──► sink (channel or fn)
//!       │                 │ no handler         └─ no ──► dead "refused by policy"
//!       │                 └──────────────────────────► dead "invalid handle"
//!       └─ else ──► routes[dst] or parent stream ──► StreamOut::send
//!                        │ none, or back where it came from ──► dead "no route"
//!                        └ unidirectional, neither end the parent ──► dead "refused"
//! ```

use crate::broker::{BrokerTx, Cmd};
use crate::call::Registry;
use crate::ids::{ContextId, Handle};
use crate::message::{self, Message};
use crate::policy::{Policy, Source, Trust};
use crate::stream::{StreamId, StreamOut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

/// Where a handler's messages go.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A channel read by a [`crate::Receiver`] (or the agent's executor).
    Chan(crossbeam_channel::Sender<Message>),
    /// Drops what arrives: an abandoned call's reply handle, kept so that
    /// [`crate::Router::pending_calls`] counts the call until it ends.
    Discard,
    /// A function run on the routing thread (internal handlers only: it must
    /// not block).
    Fn(Arc<dyn Fn(Message, Option<StreamId>, &Source) + Send + Sync>),
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
            Self::Stream(s) => s.pending_bytes() <= crate::stream::LOW_WATER,
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
}

/// How long a thread waits for room on a full stream before the message is
/// answered as undeliverable.
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct HandlerEntry {
    pub(crate) policy: Policy,
    pub(crate) sink: Sink,
    /// For channel sinks read by a [`crate::Receiver`]: its queue's size.
    pub(crate) gauge: Option<Arc<Gauge>>,
    pub(crate) persist: bool,
    /// When this context disconnects the handler gets a dead message.
    pub(crate) respondent: Option<ContextId>,
    pub(crate) label: &'static str,
    pub(crate) since: Instant,
}

#[derive(Default)]
pub(crate) struct RouteState {
    pub(crate) streams: HashMap<StreamId, Arc<StreamOut>>,
    pub(crate) routes: HashMap<ContextId, StreamId>,
    pub(crate) parent_stream: Option<StreamId>,
    pub(crate) names: HashMap<ContextId, Arc<str>>,
    /// Contexts that were routed here once and are gone, with why: a
    /// message for one gets "disconnected", not "no route".
    pub(crate) gone: HashMap<ContextId, Arc<str>>,
}

/// Entries kept in [`RouteState::gone`] before it is emptied (ids are never
/// reused, so a forgotten one only degrades an error's kind to "no route").
const GONE_MAX: usize = 1 << 16;

impl RouteState {
    /// Records that `id` is gone, for `why`.
    pub(crate) fn mark_gone(&mut self, id: ContextId, why: &str) {
        if self.gone.len() >= GONE_MAX {
            self.gone.clear();
        }
        let name = self.names.get(&id).map_or_else(
            || format!("context {id}"),
            |n| format!("context {id} ({n})"),
        );
        self.gone.insert(
            id,
            format!("{}: {name} is gone: {why}", message::DEAD_DISCONNECTED).into(),
        );
    }
}

/// What the router does with one message: the pure part of routing,
/// separated so it can be fuzzed (see [`crate::fuzzing::route_decisions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// For a handler in this context.
    Deliver,
    /// Write it to this stream.
    Forward(StreamId),
    /// Answer with a dead reply carrying this reason (if a reply is wanted).
    Dead(&'static str),
    /// Drop it silently but for a log line: it failed the reverse-path check.
    Drop(&'static str),
}

/// Decides what to do with `msg`, which arrived on stream `from` (`None`
/// for a message sent by this process), given this context's `routes`
/// (context id to the stream it lives behind) and its `parent` stream.
pub(crate) fn decide(
    id: &Identity,
    routes: &HashMap<ContextId, StreamId>,
    parent: Option<StreamId>,
    msg: &Message,
    from: Option<StreamId>,
) -> Decision {
    if msg.data.len() > id.max_message_size {
        return Decision::Dead(message::DEAD_TOO_LARGE);
    }
    let way_back = |c: ContextId| routes.get(&c).copied().or(parent);
    if let Some(from) = from {
        if way_back(msg.auth_id) != Some(from) {
            return Decision::Drop("bad auth_id");
        }
        if msg.src_id != msg.auth_id && way_back(msg.src_id) != Some(from) {
            return Decision::Drop("bad src_id");
        }
    }
    if msg.dst_id == id.me {
        return Decision::Deliver;
    }
    match (way_back(msg.dst_id), from) {
        (None, _) => Decision::Dead(message::DEAD_NO_ROUTE),
        (Some(out), Some(from)) if out == from => Decision::Dead(message::DEAD_NO_ROUTE),
        (Some(out), Some(from))
            if id.unidirectional && Some(out) != parent && Some(from) != parent =>
        {
            Decision::Dead("refused: unidirectional routing mode is on")
        }
        (Some(out), _) => Decision::Forward(out),
    }
}

/// Settings a context is started with; the controller's are inherited by
/// every context below it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) me: ContextId,
    pub(crate) name: String,
    /// Parent first, controller last.
    pub(crate) ancestors: Vec<ContextId>,
    pub(crate) unidirectional: bool,
    pub(crate) max_message_size: usize,
}

pub(crate) struct Shared {
    pub(crate) id: Identity,
    pub(crate) state: Mutex<RouteState>,
    pub(crate) handlers: Mutex<HashMap<Handle, HandlerEntry>>,
    next_handle: AtomicU32,
    pub(crate) broker: BrokerTx,
    pub(crate) registry: Arc<Registry>,
    pub(crate) ids: crate::ids_alloc::IdAllocator,
    pub(crate) shut_down: AtomicBool,
    pub(crate) detached: AtomicBool,
    pub(crate) broker_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) current_call: Mutex<Option<(String, Instant)>>,
    /// The log level last sent to (or configured for) the children.
    pub(crate) log_level: std::sync::atomic::AtomicU8,
    /// Calls whose callers gave up: (caller, reply handle).
    pub(crate) cancelled: Mutex<std::collections::HashSet<(ContextId, Handle)>>,
    pub(crate) extensions: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Shared {
    pub(crate) fn new(id: Identity, broker: BrokerTx, registry: Arc<Registry>) -> Self {
        let ids = crate::ids_alloc::IdAllocator::new(id.me == ContextId::CONTROLLER);
        Self {
            id,
            state: Mutex::new(RouteState::default()),
            handlers: Mutex::new(HashMap::new()),
            next_handle: AtomicU32::new(Handle::FIRST_DYNAMIC.0),
            broker,
            registry,
            ids,
            shut_down: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            broker_thread: Mutex::new(None),
            current_call: Mutex::new(None),
            cancelled: Mutex::new(std::collections::HashSet::new()),
            log_level: std::sync::atomic::AtomicU8::new(log::max_level() as u8),
            extensions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn me(&self) -> ContextId {
        self.id.me
    }

    pub(crate) fn parent(&self) -> Option<ContextId> {
        self.id.ancestors.first().copied()
    }

    fn trust(&self) -> Trust<'_> {
        Trust {
            me: self.id.me,
            ancestors: &self.id.ancestors,
        }
    }

    pub(crate) fn alloc_handle(&self) -> Handle {
        Handle(self.next_handle.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn add_handler(&self, handle: Handle, entry: HandlerEntry) {
        self.handlers.lock().insert(handle, entry);
    }

    pub(crate) fn remove_handler(&self, handle: Handle) {
        self.handlers.lock().remove(&handle);
    }

    /// Keeps a one-shot handler registered but drops what it receives: the
    /// call it waits for is still running remotely.
    pub(crate) fn abandon_handler(&self, handle: Handle) -> bool {
        match self.handlers.lock().get_mut(&handle) {
            Some(h) if h.respondent.is_some() && !h.persist => {
                h.sink = Sink::Discard;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn name_of(&self, id: ContextId) -> Arc<str> {
        if id == self.id.me {
            return self.id.name.as_str().into();
        }
        self.state
            .lock()
            .names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("context {id}").into())
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
        let decision = {
            let st = self.state.lock();
            let d = decide(
                &self.id,
                &st.routes,
                st.parent_stream,
                &msg,
                from.map(|f| f.id),
            );
            match d {
                Decision::Forward(sid) => match st.streams.get(&sid) {
                    Some(out) => Ok(out.clone()),
                    None => Err(Decision::Dead(message::DEAD_NO_ROUTE)),
                },
                other => Err(other),
            }
        };
        match decision {
            Ok(out) => {
                if from.is_none()
                    && out.is_full()
                    && !ON_BROKER.with(std::cell::Cell::get)
                    && !out.wait_room(deadline)
                {
                    let stalled = Stalled {
                        stream: out.name.to_string(),
                    };
                    log::warn!("{}: {stalled}: dropped {msg:?}", self.id.name);
                    self.send_dead(&msg, &stalled.to_string());
                    return Routed::Stalled(stalled);
                }
                if out.send(&msg).is_err() {
                    if !msg.enc.is_more() {
                        self.send_dead(&msg, message::DEAD_NO_ROUTE);
                    }
                    return Routed::Done;
                }
                return match out.is_full() {
                    true => Routed::Filled(Blocked::Stream(out)),
                    false => Routed::Done,
                };
            }
            Err(Decision::Deliver) => {
                return match self.deliver_local(msg, from) {
                    Some(b) => Routed::Filled(b),
                    None => Routed::Done,
                };
            }
            Err(Decision::Dead(_)) if msg.enc.is_more() => {
                // Only the last frame of a split message is answered.
            }
            Err(Decision::Drop(why)) => {
                let name = from.map_or("this context", |f| &*f.name);
                log::warn!("{}: dropped {msg:?} from {name}: {why}", self.id.name);
            }
            Err(Decision::Dead(reason)) if reason == message::DEAD_TOO_LARGE => {
                self.refuse_too_large(&msg, msg.data.len());
            }
            Err(Decision::Dead(reason)) => {
                if !msg.is_dead() {
                    log::debug!("{}: {reason}: {msg:?}", self.id.name);
                }
                let gone = (reason == message::DEAD_NO_ROUTE)
                    .then(|| self.state.lock().gone.get(&msg.dst_id).cloned())
                    .flatten();
                self.send_dead(&msg, gone.as_deref().unwrap_or(reason));
            }
            Err(Decision::Forward(_)) => {}
        }
        Routed::Done
    }

    /// Answers a message of `len` payload bytes that is over
    /// `max_message_size`: a dead reply to its sender when it wants one,
    /// else a dead notice to its receiver (a reply, or a send to a channel).
    pub(crate) fn refuse_too_large(&self, msg: &Message, len: usize) {
        let why = format!(
            "{}: {len} bytes, the limit is {} bytes",
            message::DEAD_TOO_LARGE,
            self.id.max_message_size
        );
        log::warn!("{}: {why}: {msg:?}", self.id.name);
        if msg.reply_to == Handle::NONE && !msg.is_dead() && msg.dst_id != self.id.me {
            self.route(Message {
                enc: message::Enc::BIN,
                dst_id: msg.dst_id,
                src_id: self.id.me,
                auth_id: self.id.me,
                handle: msg.handle,
                reply_to: Handle::IS_DEAD,
                data: bytes::Bytes::from(why.into_bytes()),
            });
        } else {
            self.send_dead(msg, &why);
        }
    }

    /// Whether `msg`, arriving on `from`, passes the reverse-path check
    /// (before the broker buffers the frames of a split message for it).
    pub(crate) fn source_ok(&self, msg: &Message, from: &StreamOut) -> bool {
        let st = self.state.lock();
        !matches!(
            decide(&self.id, &st.routes, st.parent_stream, msg, Some(from.id)),
            Decision::Drop(_)
        )
    }

    fn send_dead(&self, msg: &Message, reason: &str) {
        if let Some(dead) = msg.dead_reply(self.id.me, reason) {
            // A dead reply to ourselves, or routed back: cannot loop, since
            // dead messages never get dead replies.
            self.route(dead);
        }
    }

    fn deliver_local(&self, msg: Message, from: Option<&StreamOut>) -> Option<Blocked> {
        let src = Source {
            stream_remote: from.map(|s| s.remote_id),
            from_parent_stream: from.is_some_and(|s| s.is_parent),
        };
        let sink = {
            let mut handlers = self.handlers.lock();
            let Some(h) = handlers.get(&msg.handle) else {
                drop(handlers);
                if !msg.is_dead() {
                    log::debug!(
                        "{}: {} for {msg:?}",
                        self.id.name,
                        message::DEAD_INVALID_HANDLE
                    );
                }
                self.send_dead(&msg, message::DEAD_INVALID_HANDLE);
                return None;
            };
            if !h.policy.allows(&msg, &src, &self.trust()) {
                drop(handlers);
                log::warn!("{}: policy refused {msg:?}", self.id.name);
                self.send_dead(&msg, message::DEAD_REFUSED);
                return None;
            }
            let sink = (h.sink.clone(), h.gauge.clone());
            if !h.persist {
                handlers.remove(&msg.handle);
            }
            sink
        };
        match sink {
            (Sink::Chan(tx), gauge) => {
                let full = gauge.as_ref().is_some_and(|g| g.add(&msg));
                let _ = tx.send(msg);
                if full && from.is_some() {
                    return gauge.map(Blocked::Queue);
                }
            }
            (Sink::Fn(f), _) => f(msg, from.map(|s| s.id), &src),
            (Sink::Discard, _) => {}
        }
        None
    }

    /// Every handler waiting on `id` gets a dead message.
    pub(crate) fn fail_respondents(&self, id: ContextId, reason: &str) {
        let gone: Vec<(Handle, Sink)> = {
            let mut handlers = self.handlers.lock();
            let hs: Vec<Handle> = handlers
                .iter()
                .filter(|(_, h)| h.respondent == Some(id))
                .map(|(k, _)| *k)
                .collect();
            hs.into_iter()
                .filter_map(|k| handlers.remove(&k).map(|h| (k, h.sink)))
                .collect()
        };
        for (handle, sink) in gone {
            let dead = Message {
                enc: message::Enc::BIN,
                dst_id: self.id.me,
                src_id: id,
                auth_id: id,
                handle,
                reply_to: Handle::IS_DEAD,
                data: bytes::Bytes::copy_from_slice(reason.as_bytes()),
            };
            match sink {
                Sink::Chan(tx) => {
                    let _ = tx.send(dead);
                }
                Sink::Fn(f) => f(dead, None, &Source::LOCAL),
                Sink::Discard => {}
            }
        }
    }

    /// Drops every handler, waking its receiver with "router shut down".
    pub(crate) fn fail_all_handlers(&self) {
        let all: Vec<(Handle, HandlerEntry)> = self.handlers.lock().drain().collect();
        for (handle, h) in all {
            if let Sink::Chan(tx) = h.sink {
                let mut dead =
                    Message::bytes(self.id.me, handle, message::DEAD_SHUTDOWN.as_bytes());
                dead.reply_to = Handle::IS_DEAD;
                dead.src_id = self.id.me;
                dead.auth_id = self.id.me;
                let _ = tx.send(dead);
            }
        }
    }

    /// The stream is gone: drop its routes and tell everyone who cares.
    /// Returns the context ids that became unreachable.
    pub(crate) fn stream_closed(&self, sid: StreamId, reason: &str) -> Vec<ContextId> {
        let (lost, was_parent) = {
            let mut st = self.state.lock();
            let Some(out) = st.streams.remove(&sid) else {
                return Vec::new();
            };
            out.close();
            let lost: Vec<ContextId> = st
                .routes
                .iter()
                .filter(|(_, s)| **s == sid)
                .map(|(id, _)| *id)
                .collect();
            for id in &lost {
                st.routes.remove(id);
                st.mark_gone(*id, reason);
            }
            let was_parent = st.parent_stream == Some(sid);
            if was_parent {
                st.parent_stream = None;
            }
            (lost, was_parent)
        };
        let why = format!("{}: {reason}", message::DEAD_DISCONNECTED);
        // While shutting down every stream closes: announcing each loss on
        // every other stream would cost n² messages for n children, and the
        // parent learns of the losses when this context's stream closes.
        let announce = !self.is_shut_down();
        for id in &lost {
            self.fail_respondents(*id, &why);
            if announce {
                self.broadcast_del_route(*id, None);
            }
        }
        if was_parent {
            for id in self.id.ancestors.clone() {
                self.fail_respondents(id, &why);
            }
        }
        lost
    }

    /// Tells the parent and every child (but `except`) that `id` is gone.
    pub(crate) fn broadcast_del_route(&self, id: ContextId, except: Option<StreamId>) {
        let targets: Vec<Arc<StreamOut>> = self
            .state
            .lock()
            .streams
            .values()
            .filter(|s| Some(s.id) != except)
            .cloned()
            .collect();
        for out in targets {
            if let Ok(mut msg) = Message::typed(out.remote_id, Handle::DEL_ROUTE, &id) {
                msg.src_id = self.id.me;
                msg.auth_id = self.id.me;
                let _ = out.send(&msg);
            }
        }
    }

    pub(crate) fn stream_by_context(&self, id: ContextId) -> Option<Arc<StreamOut>> {
        let st = self.state.lock();
        st.routes
            .get(&id)
            .or(st.parent_stream.as_ref())
            .and_then(|s| st.streams.get(s))
            .cloned()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn broker_cmd(&self, cmd: Cmd) {
        self.broker.send(cmd);
    }
}
