//! A deterministic mesh of router cores joined by in-memory byte pipes.
//!
//! Each node is a [`RouterCore`] (the IO-free routing state machine of
//! `mitogen-core`) with the id of its index. Each direction of a link is a
//! *pipe*: the sender's [`Outbound`] (the sans-IO output half of the
//! stream protocol: lanes, fragments, high- and low-water marks), a byte
//! buffer of at most [`Mesh::pipe_capacity`] bytes in flight, and the
//! receiver's [`Inbound`] (decoding, reassembly, the reverse-path
//! pre-check). So messages cross the mesh as frames, large ones split into
//! fragments that interleave with small calls, and a full pipe pushes back
//! exactly as a full socket does: a local sender is *held* while the
//! stream it writes to is over [`HIGH_WATER`] (until it is under
//! [`LOW_WATER`]), and a node stops reading a stream whose messages filled
//! another stream until that one is clear.
//!
//! Nothing runs until [`Mesh::step`] makes one move (route one message
//! that a pipe's reader decoded, or let one pipe's writer put one chunk of
//! bytes in flight, first pipe in link order) or [`Mesh::drive`] runs until
//! nothing can move, so a test sees exactly the same interleaving every
//! time, with no threads, sockets or sleeps. The clock is virtual
//! ([`Mesh::advance`]). [`Mesh::stall`] stops a pipe's reader, as a peer
//! that does not read.
//!
//! ```
//! use mitogen_core::{ContextId, Handle, Message, Policy};
//! use mitogen_test_support::mesh::Mesh;
//!
//! let mut mesh = Mesh::new();
//! let a = mesh.spawn(ContextId(0));
//! let b = mesh.spawn(a);
//! mesh.drive(); // b's route reaches the controller
//! let (handle, tag) = mesh.listen(b, Policy::ParentAuthority, None);
//! mesh.send(ContextId(0), Message::bytes(b, handle, &b"hi"[..]));
//! mesh.drive();
//! assert_eq!(mesh.delivered(b, tag).len(), 1);
//! ```

use mitogen_core::layer::Source;
use mitogen_core::machine::{Action, Handler, Identity, Link, RouterCore, StreamId};
use mitogen_core::stream_core::{Inbound, Input, Outbound};
use mitogen_core::{ContextId, Handle, Message, Policy};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use mitogen_core::stream_core::{ALONE_MAX, FRAGMENT, HIGH_WATER, LOW_WATER};

/// A node's handler sink in the mesh: a tag naming the listener.
pub type Tag = u32;
/// A link end's writer: the index of the pipe it writes into.
type PipeId = usize;

/// One message handed to a listener.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The listener's tag.
    pub tag: Tag,
    /// The message.
    pub msg: Message,
    /// Where the core verified it came from.
    pub source: Source,
}

/// Something a core dropped (forged source, refused policy, ...).
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The node that dropped it.
    pub at: ContextId,
    /// The message.
    pub msg: Message,
    /// Why.
    pub why: &'static str,
}

struct Node {
    core: Option<RouterCore<Tag, PipeId>>,
    parent: Option<ContextId>,
    children: Vec<ContextId>,
    /// The stream this node has to each neighbour.
    streams: HashMap<ContextId, StreamId>,
    inbox: Vec<Delivery>,
}

/// One direction of a link: the sender's output half, the bytes in flight,
/// the receiver's input half.
struct Pipe {
    from: ContextId,
    to: ContextId,
    /// The receiving node's id for this stream.
    sid: StreamId,
    out: Outbound,
    /// Local sends waiting for room (the sender is held).
    held: VecDeque<Message>,
    wire: Vec<u8>,
    inb: Inbound,
    /// Whether the reader has buffered bytes it has not decoded yet.
    unread: bool,
    open: bool,
    /// The reader does not read ([`Mesh::stall`]).
    stalled: bool,
    /// The reader stopped: what it routed filled this pipe.
    paused_on: Option<PipeId>,
}

/// Who brought a node's input, which decides how backpressure applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A thread of the node (a send): held while the stream is full.
    Thread,
    /// The node's broker (stream set-up and loss, refusals): never held.
    Broker,
    /// A message read from this pipe: the pipe's reader pauses while what
    /// it routed fills another pipe.
    Stream(PipeId),
}

/// N router cores joined by in-memory byte pipes under a virtual clock.
pub struct Mesh {
    nodes: Vec<Node>,
    pipes: Vec<Pipe>,
    unidirectional: bool,
    max_message_size: usize,
    epoch: Instant,
    clock: Duration,
    next_tag: Tag,
    next_handle: u32,
    dropped: Vec<Dropped>,
    steps: u64,
    fragments: u64,
    /// Steps one `drive` may take before it is declared a loop.
    pub step_limit: u64,
    /// Bytes a pipe holds in flight (what a socket buffer would): a writer
    /// puts at most this much in before its reader takes it out.
    pub pipe_capacity: usize,
}

impl Default for Mesh {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("nodes", &self.nodes.len())
            .field("steps", &self.steps)
            .finish()
    }
}

impl Mesh {
    /// A mesh holding only the controller (context 0).
    pub fn new() -> Self {
        Self::with_options(false, 1 << 20)
    }

    /// A mesh whose routers run in unidirectional mode.
    pub fn unidirectional() -> Self {
        Self::with_options(true, 1 << 20)
    }

    /// A mesh with the given routing mode and `max_message_size`.
    pub fn with_options(unidirectional: bool, max_message_size: usize) -> Self {
        let mut mesh = Self {
            nodes: Vec::new(),
            pipes: Vec::new(),
            unidirectional,
            max_message_size,
            epoch: Instant::now(),
            clock: Duration::ZERO,
            next_tag: 1,
            next_handle: 1000,
            dropped: Vec::new(),
            steps: 0,
            fragments: 0,
            step_limit: 1_000_000,
            pipe_capacity: 64 << 10,
        };
        mesh.add_node(None);
        mesh
    }

    fn add_node(&mut self, parent: Option<ContextId>) -> ContextId {
        let me = ContextId(self.nodes.len() as u32);
        let mut ancestors = Vec::new();
        let mut p = parent;
        while let Some(id) = p {
            ancestors.push(id);
            p = self.nodes[id.0 as usize].parent;
        }
        let id = Identity {
            me,
            name: if me.0 == 0 {
                "controller".into()
            } else {
                format!("mesh.{}", me.0)
            },
            ancestors,
            unidirectional: self.unidirectional,
            max_message_size: self.max_message_size,
        };
        self.nodes.push(Node {
            core: Some(RouterCore::new(id)),
            parent,
            children: Vec::new(),
            streams: HashMap::new(),
            inbox: Vec::new(),
        });
        me
    }

    fn new_pipe(&self, from: ContextId, to: ContextId, sid: StreamId) -> Pipe {
        Pipe {
            from,
            to,
            sid,
            out: Outbound::new(from),
            held: VecDeque::new(),
            wire: Vec::new(),
            inb: Inbound::new(to, self.max_message_size),
            unread: false,
            open: true,
            stalled: false,
            paused_on: None,
        }
    }

    /// Starts a new context as a child of `parent` and returns its id; the
    /// ADD_ROUTE announcements it causes are queued (run [`Mesh::drive`]).
    ///
    /// # Panics
    /// If `parent` is not a live node.
    pub fn spawn(&mut self, parent: ContextId) -> ContextId {
        assert!(self.is_alive(parent), "{parent} is not alive");
        let child = self.add_node(Some(parent));
        self.nodes[parent.0 as usize].children.push(child);
        // Pipe indexes: parent -> child, child -> parent.
        let (down, up) = (self.pipes.len(), self.pipes.len() + 1);
        let (sid_p, sid_c) = (StreamId(down), StreamId(up));
        let pipe = self.new_pipe(parent, child, sid_c);
        self.pipes.push(pipe);
        let pipe = self.new_pipe(child, parent, sid_p);
        self.pipes.push(pipe);
        self.nodes[parent.0 as usize].streams.insert(child, sid_p);
        self.nodes[child.0 as usize].streams.insert(parent, sid_c);
        let name = format!("mesh.{}", child.0);
        self.with_core(child, Via::Broker, |core, out| {
            core.stream_opened(
                sid_c,
                Link {
                    remote: parent,
                    is_parent: true,
                    name: "parent".into(),
                    out: up,
                },
                out,
            );
        });
        self.with_core(parent, Via::Broker, |core, out| {
            core.stream_opened(
                sid_p,
                Link {
                    remote: child,
                    is_parent: false,
                    name: name.as_str().into(),
                    out: down,
                },
                out,
            );
        });
        child
    }

    /// Kills `node` and everything below it (as a real subtree exits when
    /// its parent's stream closes); its parent sees the stream close.
    pub fn kill(&mut self, node: ContextId) {
        self.kill_because(node, "killed");
    }

    fn kill_because(&mut self, node: ContextId, reason: &str) {
        if !self.is_alive(node) || node.0 == 0 {
            return;
        }
        let mut doomed = vec![node];
        let mut i = 0;
        while i < doomed.len() {
            let n = doomed[i];
            doomed.extend(self.nodes[n.0 as usize].children.iter().copied());
            i += 1;
        }
        for n in &doomed {
            self.nodes[n.0 as usize].core = None;
        }
        // Whatever was in flight to or from the dead is lost with them;
        // senders held on those pipes wake to a closed stream.
        let mut woken = Vec::new();
        for p in &mut self.pipes {
            if doomed.contains(&p.to) || doomed.contains(&p.from) {
                p.open = false;
                p.out.close();
                p.wire.clear();
                p.inb = Inbound::new(p.to, self.max_message_size);
                p.unread = false;
                for m in p.held.drain(..) {
                    if let Err(Some(dead)) = p.out.queue(m) {
                        woken.push((p.from, dead));
                    }
                }
            }
        }
        if let Some(parent) = self.nodes[node.0 as usize].parent {
            if let Some(sid) = self.nodes[parent.0 as usize].streams.get(&node).copied() {
                self.with_core(parent, Via::Broker, |core, out| {
                    core.stream_closed(sid, reason, out);
                });
            }
        }
        for (at, dead) in woken {
            self.send(at, dead);
        }
    }

    /// Adds a listener at `node`; returns its handle and tag.
    pub fn listen(
        &mut self,
        node: ContextId,
        policy: Policy,
        respondent: Option<ContextId>,
    ) -> (Handle, Tag) {
        let (handle, tag) = (Handle(self.next_handle), self.next_tag);
        self.next_handle += 1;
        self.next_tag += 1;
        let since = self.now();
        if let Some(core) = self.core_mut(node) {
            core.add_handler(
                handle,
                Handler {
                    policy,
                    sink: tag,
                    persist: respondent.is_none(),
                    respondent,
                    label: "mesh",
                    since,
                },
            );
        }
        (handle, tag)
    }

    /// Sends `msg` from `node` as its own threads would (source fields are
    /// taken as given: set them to forge).
    pub fn send(&mut self, node: ContextId, msg: Message) {
        self.with_core(node, Via::Thread, |core, out| core.route(msg, None, out));
    }

    /// Sends `msg` from `node` stamped with its id (`src_id`, `auth_id`).
    pub fn send_stamped(&mut self, node: ContextId, mut msg: Message) {
        msg.src_id = node;
        msg.auth_id = node;
        self.send(node, msg);
    }

    /// A call-like request: a one-shot listener at `from` waiting on `to`
    /// (failed if `to` disappears), and a message to `to`'s `handle` with
    /// it as `reply_to`. Returns the reply listener's tag.
    pub fn request(&mut self, from: ContextId, to: ContextId, handle: Handle) -> Tag {
        let (reply, tag) = self.listen(from, Policy::Respondent(to), Some(to));
        let mut msg = Message::bytes(to, handle, &b"request"[..]);
        msg.reply_to = reply;
        self.send_stamped(from, msg);
        tag
    }

    /// Stops (`true`) or restarts the reader of the pipe from `from` to its
    /// neighbour `to`: a peer that does not read, so the pipe fills and
    /// backpressure builds behind it.
    pub fn stall(&mut self, from: ContextId, to: ContextId, on: bool) {
        if let Some(p) = self.pipe_mut(from, to) {
            p.stalled = on;
        }
    }

    /// Bytes `from` has queued for its neighbour `to` (not yet in flight).
    pub fn pending(&self, from: ContextId, to: ContextId) -> usize {
        self.pipe(from, to).map_or(0, |p| p.out.pending())
    }

    /// Bytes in flight from `from` to its neighbour `to`.
    pub fn in_flight(&self, from: ContextId, to: ContextId) -> usize {
        self.pipe(from, to).map_or(0, |p| p.wire.len())
    }

    /// Local sends of `from` held until the stream to `to` has room.
    pub fn held(&self, from: ContextId, to: ContextId) -> usize {
        self.pipe(from, to).map_or(0, |p| p.held.len())
    }

    /// Whether the reader of the pipe from `from` to `to` stopped because
    /// what it routed filled another stream.
    pub fn is_paused(&self, from: ContextId, to: ContextId) -> bool {
        self.pipe(from, to).is_some_and(|p| p.paused_on.is_some())
    }

    /// Fragments (frames with more to come) readers have decoded so far.
    pub fn fragments(&self) -> u64 {
        self.fragments
    }

    fn pipe(&self, from: ContextId, to: ContextId) -> Option<&Pipe> {
        self.pipes
            .iter()
            .find(|p| p.from == from && p.to == to && p.open)
    }

    fn pipe_mut(&mut self, from: ContextId, to: ContextId) -> Option<&mut Pipe> {
        self.pipes
            .iter_mut()
            .find(|p| p.from == from && p.to == to && p.open)
    }

    /// Makes one move; false when nothing can move.
    pub fn step(&mut self) -> bool {
        for i in 0..self.pipes.len() {
            if self.read_one(i) || self.write_one(i) {
                self.steps += 1;
                return true;
            }
        }
        false
    }

    /// Pipe `i`'s reader takes what is in flight and routes one message.
    fn read_one(&mut self, i: PipeId) -> bool {
        let p = &mut self.pipes[i];
        if !p.open || p.stalled {
            return false;
        }
        if let Some(q) = p.paused_on {
            if !self.pipes[q].out.is_clear() && self.pipes[q].open {
                return false;
            }
            self.pipes[i].paused_on = None;
        }
        let Some(core) = self
            .nodes
            .get(self.pipes[i].to.0 as usize)
            .and_then(|n| n.core.as_ref())
        else {
            return false;
        };
        let p = &mut self.pipes[i];
        if !p.wire.is_empty() {
            p.inb.feed(&p.wire);
            p.wire.clear();
            p.unread = true;
        }
        if !p.unread {
            return false;
        }
        let (to, sid) = (p.to, p.sid);
        let input = p.inb.poll(|m| core.source_ok(m, sid));
        match input {
            Ok(Some(Input::Message(m))) => {
                if m.enc.is_more() {
                    self.fragments += 1;
                }
                self.with_core(to, Via::Stream(i), |core, out| {
                    core.route(m, Some(sid), out)
                });
            }
            Ok(Some(Input::TooLarge { head, len })) => {
                self.with_core(to, Via::Broker, |core, out| {
                    core.refuse_too_large(&head, len, out);
                });
            }
            Ok(None) => {
                // Fragments of a message for this node are kept, not routed.
                self.pipes[i].unread = false;
            }
            Err(e) => {
                // The reader closes a corrupt stream: the child end exits.
                let (a, b) = (self.pipes[i].from, self.pipes[i].to);
                let child = if self.parent_of(a) == Some(b) { a } else { b };
                self.kill_because(child, &format!("corrupt stream: {e}"));
            }
        }
        true
    }

    /// Pipe `i`'s writer puts one chunk of queued bytes in flight.
    fn write_one(&mut self, i: PipeId) -> bool {
        let cap = self.pipe_capacity.max(1);
        let p = &mut self.pipes[i];
        if !p.open || p.wire.len() >= cap {
            return false;
        }
        let mut room = cap - p.wire.len();
        let mut n = 0;
        for b in p.out.next_bytes() {
            let take = b.len().min(room);
            p.wire.extend_from_slice(&b[..take]);
            n += take;
            room -= take;
            if room == 0 {
                break;
            }
        }
        if n == 0 {
            return false;
        }
        p.out.advance(n);
        if p.out.is_clear() && !p.held.is_empty() {
            // The held senders wake and queue what they waited to send.
            let held: Vec<Message> = p.held.drain(..).collect();
            for m in held {
                self.transmit(i, m, true);
            }
        }
        true
    }

    /// Moves until nothing can move; returns the steps taken.
    ///
    /// # Panics
    /// After [`Mesh::step_limit`] steps: messages are looping.
    pub fn drive(&mut self) -> u64 {
        let mut n = 0;
        while self.step() {
            n += 1;
            assert!(
                n <= self.step_limit,
                "messages loop: {n} steps without settling"
            );
        }
        n
    }

    /// Advances the virtual clock.
    pub fn advance(&mut self, d: Duration) {
        self.clock += d;
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.epoch + self.clock
    }

    /// What listener `tag` at `node` received.
    pub fn delivered(&self, node: ContextId, tag: Tag) -> Vec<&Delivery> {
        self.nodes[node.0 as usize]
            .inbox
            .iter()
            .filter(|d| d.tag == tag)
            .collect()
    }

    /// Everything `node` delivered to its listeners, in order.
    pub fn inbox(&self, node: ContextId) -> &[Delivery] {
        &self.nodes[node.0 as usize].inbox
    }

    /// What the cores dropped, in order.
    pub fn dropped(&self) -> &[Dropped] {
        &self.dropped
    }

    /// Whether `node` exists and is alive.
    pub fn is_alive(&self, node: ContextId) -> bool {
        self.nodes
            .get(node.0 as usize)
            .is_some_and(|n| n.core.is_some())
    }

    /// Every node id (alive or not).
    pub fn nodes(&self) -> impl Iterator<Item = ContextId> {
        (0..self.nodes.len() as u32).map(ContextId)
    }

    /// The core of a live node.
    pub fn core(&self, node: ContextId) -> Option<&RouterCore<Tag, PipeId>> {
        self.nodes.get(node.0 as usize)?.core.as_ref()
    }

    /// The parent of a node.
    pub fn parent_of(&self, node: ContextId) -> Option<ContextId> {
        self.nodes.get(node.0 as usize)?.parent
    }

    /// The nodes on the tree path from `a` to `b`, both included.
    pub fn path(&self, a: ContextId, b: ContextId) -> Vec<ContextId> {
        let up = |mut n: ContextId| {
            let mut v = vec![n];
            while let Some(p) = self.parent_of(n) {
                v.push(p);
                n = p;
            }
            v
        };
        let (ua, ub) = (up(a), up(b));
        let Some(meet) = ua.iter().find(|n| ub.contains(n)).copied() else {
            return Vec::new();
        };
        let mut path: Vec<ContextId> = ua.iter().take_while(|n| **n != meet).copied().collect();
        path.push(meet);
        let down: Vec<ContextId> = ub.iter().take_while(|n| **n != meet).copied().collect();
        path.extend(down.into_iter().rev());
        path
    }

    fn core_mut(&mut self, node: ContextId) -> Option<&mut RouterCore<Tag, PipeId>> {
        self.nodes.get_mut(node.0 as usize)?.core.as_mut()
    }

    /// Queues `msg` on pipe `out`, as the stream writer does: a local send
    /// (`local`) to a stream over its high-water mark is held until the
    /// stream has room (in order: behind any held send of its lane); a
    /// closed stream answers with a dead reply.
    fn transmit(&mut self, out: PipeId, msg: Message, local: bool) {
        let Some(p) = self.pipes.get_mut(out) else {
            return;
        };
        let key = (msg.dst_id, msg.src_id, msg.handle);
        let behind = p.held.iter().any(|h| (h.dst_id, h.src_id, h.handle) == key);
        if local && p.open && (p.out.must_wait(&msg) || behind) {
            p.held.push_back(msg);
            return;
        }
        if let Err(Some(dead)) = p.out.queue(msg) {
            let from = p.from;
            self.send(from, dead);
        }
    }

    /// Runs `f` on `node`'s core and carries out the actions it produced,
    /// for the input `via` brought.
    fn with_core(
        &mut self,
        node: ContextId,
        via: Via,
        f: impl FnOnce(&mut RouterCore<Tag, PipeId>, &mut Vec<Action<Tag, PipeId>>),
    ) {
        let mut actions = Vec::new();
        match self.core_mut(node) {
            Some(core) => f(core, &mut actions),
            None => return,
        }
        for a in actions {
            match a {
                Action::Transmit { out, msg, .. } => {
                    self.transmit(out, msg, via == Via::Thread);
                    let full = self.pipes.get(out).is_some_and(|p| p.out.is_full());
                    if let (true, Via::Stream(r)) = (full, via) {
                        self.pipes[r].paused_on = Some(out);
                    }
                }
                Action::Deliver {
                    sink, msg, source, ..
                } => self.nodes[node.0 as usize].inbox.push(Delivery {
                    tag: sink,
                    msg,
                    source,
                }),
                Action::Detached(_) => {}
                Action::Dropped { msg, why, .. } => {
                    self.dropped.push(Dropped { at: node, msg, why })
                }
            }
        }
    }
}

mod fuzz;
pub use fuzz::fuzz_ops;
