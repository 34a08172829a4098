//! The routing state machine: routes, handlers, identity, policies,
//! ADD_ROUTE/DEL_ROUTE and stream loss, with no IO, no clock and no threads.
//!
//! [`RouterCore`] takes inputs and pushes what must happen as [`Action`]s
//! for its driver to carry out. The broker and the direct-write fast path
//! drive one per process (`Shared` in `router.rs`: it writes `Transmit`s to
//! sockets and hands `Deliver`s to channels); `mitogen_test_support::Mesh`
//! drives several, joined by byte pipes through the stream protocol
//! ([`crate::stream_core`]), under a virtual clock, and the
//! operation-sequence fuzz target drives that.
//!
//! # Call order
//!
//! - **Set-up**: [`RouterCore::new`], then [`RouterCore::add_handler`] for
//!   every well-known handle the context serves, before any input.
//! - **Inputs**, any order, each complete before the next (the driver holds
//!   the core under one lock): [`RouterCore::stream_opened`] (a new
//!   neighbour; a child's route is announced upward),
//!   [`RouterCore::route`] (a frame from stream X, or a local send when
//!   `from` is `None`), [`RouterCore::stream_closed`] (stream X is gone).
//! - **Outputs**: every input appends its actions to the caller's vector, in
//!   the order they must be carried out. The driver performs them after
//!   releasing the core (a `Deliver` may run user code that routes again).
//! - **Mutators** between inputs: handlers come and go
//!   ([`RouterCore::add_handler`], [`RouterCore::remove_handler`],
//!   [`RouterCore::replace_sink`]), names are learnt
//!   ([`RouterCore::set_name`]), [`RouterCore::begin_shutdown`].
//! - **Getters** at any time: routes, names, pending handlers.
//!
//! ```text
//!  route(msg, from) ── decide() ──► Forward(sid)  ──► Action::Transmit(link, msg)
//!                          │       ► Deliver ──► built-in (ADD/DEL_ROUTE, DETACHING)
//!                          │                 └─► handler table ─ policy ─► Action::Deliver
//!                          │       ► Dead(why) ──► dead reply routed back (or a dead
//!                          │                       notice to the receiver, when too large)
//!                          └─────► Drop(why) ──► Action::Dropped (logged by the driver)
//! ```

#![deny(clippy::disallowed_methods)] // sans-IO: no clock, threads or processes (clippy.toml)

use crate::ids::{ContextId, Handle, IdMap};
use crate::message::{self, Enc, Message};
use crate::policy::{Policy, Source, Trust};
use std::sync::Arc;
use std::time::Instant;

/// Identifies one stream (a link to a neighbouring context) of a router.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StreamId(pub usize);

/// Settings a context is started with; the controller's are inherited by
/// every context below it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// This context's id.
    pub me: ContextId,
    /// Its name (`local.3`, `ssh.web1`).
    pub name: String,
    /// Parent first, controller last.
    pub ancestors: Vec<ContextId>,
    /// Forward only to or from the parent (siblings cannot talk).
    pub unidirectional: bool,
    /// Largest payload accepted or sent.
    pub max_message_size: usize,
}

/// What a core knows about one of its streams.
#[derive(Debug, Clone)]
pub struct Link<T> {
    /// The context at the other end.
    pub remote: ContextId,
    /// Whether that is this context's parent.
    pub is_parent: bool,
    /// The stream's name, for logs.
    pub name: Arc<str>,
    /// The driver's handle on the stream (its writer), given back in
    /// [`Action::Transmit`].
    pub out: T,
}

/// A registered handler: who may deliver to it, and where it goes.
#[derive(Clone)]
pub struct Handler<S> {
    /// Who may deliver.
    pub policy: Policy,
    /// Where messages go (the driver's type).
    pub sink: S,
    /// Whether it stays after the first message (else one-shot).
    pub persist: bool,
    /// When this context disconnects the handler gets a dead message.
    pub respondent: Option<ContextId>,
    /// What it is, for diagnostics.
    pub label: &'static str,
    /// When it was added (the driver's clock), for diagnostics.
    pub since: Instant,
}

impl<S> std::fmt::Debug for Handler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("policy", &self.policy)
            .field("persist", &self.persist)
            .field("respondent", &self.respondent)
            .field("label", &self.label)
            .finish()
    }
}

/// What a core asks its driver to do.
#[derive(Debug)]
pub enum Action<S, T> {
    /// Write `msg` on the stream whose writer is `out`.
    Transmit {
        /// The stream.
        stream: StreamId,
        /// Its writer.
        out: T,
        /// The frame.
        msg: Message,
    },
    /// Hand `msg` to `sink`; it came from `source` (verified).
    Deliver {
        /// The handler's sink.
        sink: S,
        /// The message.
        msg: Message,
        /// The stream it arrived on (`None`: sent in this process).
        from: Option<StreamId>,
        /// Where it came from, as the core verified it.
        source: Source,
    },
    /// A child on this stream is detaching: never kill it.
    Detached(StreamId),
    /// Dropped for `why` (forged source, refused policy, refused route, a
    /// message over the size limit): the driver logs it.
    Dropped {
        /// The message (payload included, for its header in the log).
        msg: Message,
        /// Where it came from.
        from: Option<StreamId>,
        /// Why.
        why: &'static str,
    },
}

/// What the router does with one message: the pure part of routing
/// (fuzzed with random tables in `fuzzing::route_decisions`).
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
    routes: &IdMap<ContextId, StreamId>,
    parent: Option<StreamId>,
    msg: &Message,
    from: Option<StreamId>,
) -> Decision {
    if msg.data.len() > id.max_message_size {
        return Decision::Dead(message::DEAD_TOO_LARGE);
    }
    let way_back = |c: ContextId| routes.get(&c).copied().or(parent);
    if let Some(from) = from {
        // Nothing outside this process speaks as this context.
        if msg.auth_id == id.me || msg.src_id == id.me {
            return Decision::Drop("claims to be this context");
        }
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

/// Entries kept in the gone map before it is emptied (ids are never
/// reused, so a forgotten one only degrades an error's kind to "no route").
const GONE_MAX: usize = 1 << 16;

/// The routing state of one context. `S` is the driver's handler sink, `T`
/// its stream writer; both are cloned into actions.
pub struct RouterCore<S, T> {
    id: Arc<Identity>,
    links: IdMap<StreamId, Link<T>>,
    routes: IdMap<ContextId, StreamId>,
    parent: Option<StreamId>,
    names: IdMap<ContextId, Arc<str>>,
    gone: IdMap<ContextId, Arc<str>>,
    handlers: IdMap<Handle, Handler<S>>,
    shutting_down: bool,
}

impl<S, T> std::fmt::Debug for RouterCore<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCore")
            .field("me", &self.id.me)
            .field("name", &self.id.name)
            .field("routes", &self.routes)
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl<S: Clone, T: Clone> RouterCore<S, T> {
    /// A core for the context `id` describes, with no streams or handlers.
    /// (The driver may keep a clone of the same `Arc` for lock-free reads.)
    pub fn new(id: impl Into<Arc<Identity>>) -> Self {
        Self {
            id: id.into(),
            links: IdMap::default(),
            routes: IdMap::default(),
            parent: None,
            names: IdMap::default(),
            gone: IdMap::default(),
            handlers: IdMap::default(),
            shutting_down: false,
        }
    }

    /// This context's identity.
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    fn trust(&self) -> Trust<'_> {
        Trust {
            me: self.id.me,
            ancestors: &self.id.ancestors,
        }
    }

    // ---- inputs -----------------------------------------------------------

    /// A new stream to a neighbour. A child's route is recorded and
    /// announced to the parent (ADD_ROUTE), so every ancestor learns it.
    pub fn stream_opened(&mut self, sid: StreamId, link: Link<T>, out: &mut Vec<Action<S, T>>) {
        let (remote, is_parent, name) = (link.remote, link.is_parent, link.name.clone());
        self.links.insert(sid, link);
        if is_parent {
            self.parent = Some(sid);
        } else {
            self.routes.insert(remote, sid);
            self.names.insert(remote, name.clone());
            self.announce(remote, &name, out);
        }
    }

    /// Routes `msg`: a frame that arrived on `from`, or (`None`) one sent by
    /// this process.
    pub fn route(&mut self, msg: Message, from: Option<StreamId>, out: &mut Vec<Action<S, T>>) {
        match decide(&self.id, &self.routes, self.parent, &msg, from) {
            Decision::Forward(sid) => match self.links.get(&sid) {
                Some(link) => out.push(Action::Transmit {
                    stream: sid,
                    out: link.out.clone(),
                    msg,
                }),
                None => self.dead(&msg, message::DEAD_NO_ROUTE, out),
            },
            Decision::Deliver => self.deliver(msg, from, out),
            Decision::Drop(why) => out.push(Action::Dropped { msg, from, why }),
            // Only the last frame of a split message is answered.
            Decision::Dead(_) if msg.enc.is_more() => {}
            Decision::Dead(message::DEAD_TOO_LARGE) => {
                let len = msg.data.len();
                self.refuse_too_large(&msg, len, out);
            }
            Decision::Dead(reason) => {
                let gone = (reason == message::DEAD_NO_ROUTE)
                    .then(|| self.gone.get(&msg.dst_id).cloned())
                    .flatten();
                match gone {
                    Some(why) => self.dead(&msg, &why, out),
                    None => self.dead(&msg, reason, out),
                }
            }
        }
    }

    /// Stream `sid` is gone: its routes are dropped, handlers waiting on the
    /// contexts behind it get dead messages, and (unless shutting down) the
    /// loss is announced on every other stream. Returns the lost contexts.
    pub fn stream_closed(
        &mut self,
        sid: StreamId,
        reason: &str,
        out: &mut Vec<Action<S, T>>,
    ) -> Vec<ContextId> {
        if self.links.remove(&sid).is_none() {
            return Vec::new();
        }
        let lost: Vec<ContextId> = self
            .routes
            .iter()
            .filter(|(_, s)| **s == sid)
            .map(|(id, _)| *id)
            .collect();
        for id in &lost {
            self.routes.remove(id);
            self.mark_gone(*id, reason);
        }
        let was_parent = self.parent == Some(sid);
        if was_parent {
            self.parent = None;
        }
        let why = format!("{}: {reason}", message::DEAD_DISCONNECTED);
        // While shutting down every stream closes: announcing each loss on
        // every other stream would cost n² messages for n children, and the
        // parent learns of the losses when this context's stream closes.
        for id in &lost {
            self.fail_respondents(*id, &why, out);
            if !self.shutting_down {
                self.broadcast_del_route(*id, None, out);
            }
        }
        if was_parent {
            for id in self.id.ancestors.clone() {
                self.fail_respondents(id, &why, out);
            }
        }
        lost
    }

    // ---- mutators ---------------------------------------------------------

    /// Adds (or replaces) the handler on `handle`.
    pub fn add_handler(&mut self, handle: Handle, h: Handler<S>) {
        self.handlers.insert(handle, h);
    }

    /// Removes the handler on `handle`, returning it.
    pub fn remove_handler(&mut self, handle: Handle) -> Option<Handler<S>> {
        self.handlers.remove(&handle)
    }

    /// Swaps the sink of a one-shot handler that waits on a respondent
    /// (an abandoned call); false if there is no such handler.
    pub fn replace_sink(&mut self, handle: Handle, sink: S) -> bool {
        match self.handlers.get_mut(&handle) {
            Some(h) if h.respondent.is_some() && !h.persist => {
                h.sink = sink;
                true
            }
            _ => false,
        }
    }

    /// Removes every handler (the router is shutting down).
    pub fn drain_handlers(&mut self) -> Vec<(Handle, Handler<S>)> {
        self.handlers.drain().collect()
    }

    /// Records the name of a context (learnt from a `via` connect).
    pub fn set_name(&mut self, id: ContextId, name: Arc<str>) {
        self.names.insert(id, name);
    }

    /// From now on, losses are not announced (see [`RouterCore::stream_closed`]).
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    // ---- getters ----------------------------------------------------------

    /// The name of a context, or `context N`.
    pub fn name_of(&self, id: ContextId) -> Arc<str> {
        if id == self.id.me {
            return self.id.name.as_str().into();
        }
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("context {id}").into())
    }

    /// The stream that leads to `id` (its own route, else the parent's).
    pub fn stream_to(&self, id: ContextId) -> Option<(StreamId, &Link<T>)> {
        let sid = self.routes.get(&id).copied().or(self.parent)?;
        self.links.get(&sid).map(|l| (sid, l))
    }

    /// The link of stream `sid`.
    pub fn link(&self, sid: StreamId) -> Option<&Link<T>> {
        self.links.get(&sid)
    }

    /// Every stream, with its link.
    pub fn links(&self) -> impl Iterator<Item = (StreamId, &Link<T>)> {
        self.links.iter().map(|(s, l)| (*s, l))
    }

    /// Context ids routed below this context, with their streams.
    pub fn routes(&self) -> impl Iterator<Item = (ContextId, StreamId)> + '_ {
        self.routes.iter().map(|(c, s)| (*c, *s))
    }

    /// Whether `id` is routable from here.
    pub fn is_connected(&self, id: ContextId) -> bool {
        id == self.id.me
            || self.routes.contains_key(&id)
            || (self.parent.is_some() && self.id.ancestors.contains(&id))
    }

    /// Handlers waiting for a reply from `id`.
    pub fn pending_from(&self, id: ContextId) -> usize {
        self.handlers
            .values()
            .filter(|h| h.respondent == Some(id))
            .count()
    }

    /// Every handler, for diagnostics.
    pub fn handlers(&self) -> impl Iterator<Item = (Handle, &Handler<S>)> {
        self.handlers.iter().map(|(k, h)| (*k, h))
    }

    /// Whether `msg`, arriving on `from`, passes the reverse-path check.
    pub fn source_ok(&self, msg: &Message, from: StreamId) -> bool {
        !matches!(
            decide(&self.id, &self.routes, self.parent, msg, Some(from)),
            Decision::Drop(_)
        )
    }

    /// The dead reply to `msg` from this context (if it wants one).
    pub fn dead_reply(&self, msg: &Message, reason: &str) -> Option<Message> {
        msg.dead_reply(self.id.me, reason)
    }

    // ---- internals --------------------------------------------------------

    fn dead(&mut self, msg: &Message, reason: &str, out: &mut Vec<Action<S, T>>) {
        if let Some(dead) = msg.dead_reply(self.id.me, reason) {
            // Dead messages never get dead replies, so this cannot loop.
            self.route(dead, None, out);
        }
    }

    /// Answers a message of `len` payload bytes that is over
    /// `max_message_size`: a dead reply to its sender when it wants one,
    /// else a dead notice to its receiver (a reply, or a send to a channel).
    pub fn refuse_too_large(&mut self, msg: &Message, len: usize, out: &mut Vec<Action<S, T>>) {
        let why = format!(
            "{}: {len} bytes, the limit is {} bytes",
            message::DEAD_TOO_LARGE,
            self.id.max_message_size
        );
        out.push(Action::Dropped {
            msg: Message {
                data: bytes::Bytes::new(),
                ..msg.clone()
            },
            from: None,
            why: message::DEAD_TOO_LARGE,
        });
        if msg.reply_to == Handle::NONE && !msg.is_dead() && msg.dst_id != self.id.me {
            let notice = Message {
                enc: Enc::BIN,
                dst_id: msg.dst_id,
                src_id: self.id.me,
                auth_id: self.id.me,
                handle: msg.handle,
                reply_to: Handle::IS_DEAD,
                data: bytes::Bytes::from(why.into_bytes()),
            };
            self.route(notice, None, out);
        } else {
            self.dead(msg, &why, out);
        }
    }

    fn deliver(&mut self, msg: Message, from: Option<StreamId>, out: &mut Vec<Action<S, T>>) {
        let link = from.and_then(|f| self.links.get(&f));
        let source = Source {
            stream_remote: link.map(|l| l.remote),
            from_parent_stream: link.is_some_and(|l| l.is_parent),
        };
        match msg.handle {
            Handle::ADD_ROUTE => return self.add_route(&msg, from, &source, out),
            Handle::DEL_ROUTE => return self.del_route(&msg, from, &source, out),
            Handle::DETACHING => {
                if let (Some(sid), true) = (
                    from,
                    Policy::ImmediateChild.allows(&msg, &source, &self.trust()),
                ) {
                    out.push(Action::Detached(sid));
                }
                return;
            }
            _ => {}
        }
        let Some(h) = self.handlers.get(&msg.handle) else {
            if !msg.is_dead() {
                out.push(Action::Dropped {
                    msg: msg.clone(),
                    from,
                    why: message::DEAD_INVALID_HANDLE,
                });
            }
            return self.dead(&msg, message::DEAD_INVALID_HANDLE, out);
        };
        if !h.policy.allows(&msg, &source, &self.trust()) {
            out.push(Action::Dropped {
                msg: msg.clone(),
                from,
                why: message::DEAD_REFUSED,
            });
            return self.dead(&msg, message::DEAD_REFUSED, out);
        }
        let sink = h.sink.clone();
        if !h.persist {
            self.handlers.remove(&msg.handle);
        }
        out.push(Action::Deliver {
            sink,
            msg,
            from,
            source,
        });
    }

    /// A child announces a context reachable through it. It may announce
    /// only ids that are new here: not this context, not an ancestor, not
    /// one routed through another stream (that would let it capture
    /// another context's traffic).
    fn add_route(
        &mut self,
        msg: &Message,
        from: Option<StreamId>,
        source: &Source,
        out: &mut Vec<Action<S, T>>,
    ) {
        let (Some(from), true) = (
            from,
            Policy::ImmediateChild.allows(msg, source, &self.trust()),
        ) else {
            return out.push(Action::Dropped {
                msg: msg.clone(),
                from,
                why: "ADD_ROUTE not from an immediate child",
            });
        };
        let Ok((id, name)) = msg.decode::<(ContextId, String)>() else {
            return;
        };
        let taken = id == self.id.me
            || self.id.ancestors.contains(&id)
            || self.routes.get(&id).is_some_and(|sid| *sid != from);
        if taken {
            return out.push(Action::Dropped {
                msg: msg.clone(),
                from: Some(from),
                why: "refused a route for a context it does not lead to",
            });
        }
        self.routes.insert(id, from);
        let name: Arc<str> = name.into();
        self.names.insert(id, name.clone());
        self.announce(id, &name, out);
    }

    /// A neighbour withdraws a route it owned (the context behind it is gone).
    fn del_route(
        &mut self,
        msg: &Message,
        from: Option<StreamId>,
        source: &Source,
        out: &mut Vec<Action<S, T>>,
    ) {
        if source.stream_remote != Some(msg.src_id) {
            return;
        }
        let Ok(id) = msg.decode::<ContextId>() else {
            return;
        };
        let owned = match self.routes.get(&id) {
            Some(sid) if Some(*sid) == from => {
                self.routes.remove(&id);
                self.mark_gone(id, "its parent reported it disconnected");
                true
            }
            Some(_) => false,
            None => self.parent.is_some() && self.parent == from,
        };
        if owned {
            self.fail_respondents(id, message::DEAD_DISCONNECTED, out);
            self.broadcast_del_route(id, from, out);
        }
    }

    /// Tells the parent (and through it every ancestor) that `id` is
    /// reachable here.
    fn announce(&mut self, id: ContextId, name: &str, out: &mut Vec<Action<S, T>>) {
        let Some(parent) = self.id.ancestors.first().copied() else {
            return;
        };
        if let Ok(mut msg) = Message::typed(parent, Handle::ADD_ROUTE, &(id, name)) {
            msg.src_id = self.id.me;
            msg.auth_id = self.id.me;
            self.route(msg, None, out);
        }
    }

    /// Tells the parent and every child (but `except`) that `id` is gone.
    fn broadcast_del_route(
        &mut self,
        id: ContextId,
        except: Option<StreamId>,
        out: &mut Vec<Action<S, T>>,
    ) {
        for (sid, link) in &self.links {
            if Some(*sid) == except {
                continue;
            }
            if let Ok(mut msg) = Message::typed(link.remote, Handle::DEL_ROUTE, &id) {
                msg.src_id = self.id.me;
                msg.auth_id = self.id.me;
                out.push(Action::Transmit {
                    stream: *sid,
                    out: link.out.clone(),
                    msg,
                });
            }
        }
    }

    /// Every handler waiting on `id` gets a dead message (and is removed).
    fn fail_respondents(&mut self, id: ContextId, reason: &str, out: &mut Vec<Action<S, T>>) {
        let waiting: Vec<Handle> = self
            .handlers
            .iter()
            .filter(|(_, h)| h.respondent == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for handle in waiting {
            let Some(h) = self.handlers.remove(&handle) else {
                continue;
            };
            out.push(Action::Deliver {
                sink: h.sink,
                msg: Message {
                    enc: Enc::BIN,
                    dst_id: self.id.me,
                    src_id: id,
                    auth_id: id,
                    handle,
                    reply_to: Handle::IS_DEAD,
                    data: bytes::Bytes::copy_from_slice(reason.as_bytes()),
                },
                from: None,
                source: Source::LOCAL,
            });
        }
    }

    /// Records that `id` is gone, for `why`.
    fn mark_gone(&mut self, id: ContextId, why: &str) {
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
