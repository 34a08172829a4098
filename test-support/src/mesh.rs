//! A deterministic mesh of router cores joined by in-memory links.
//!
//! Each node is a [`RouterCore`] (the IO-free routing state machine of
//! `mitogen-core`) with the id of its index; links are pairs of message
//! queues. Nothing runs until [`Mesh::step`] moves one message (the first
//! non-empty queue in link order) or [`Mesh::drive`] runs until every queue
//! is empty, so a test sees exactly the same interleaving every time, with
//! no threads, sockets or sleeps. The clock is virtual ([`Mesh::advance`]).
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
use mitogen_core::{ContextId, Handle, Message, Policy};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A node's handler sink in the mesh: a tag naming the listener.
pub type Tag = u32;
/// A link end's writer: the index of the queue it writes into.
type Pipe = usize;

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
    core: Option<RouterCore<Tag, Pipe>>,
    parent: Option<ContextId>,
    children: Vec<ContextId>,
    /// The stream this node has to each neighbour.
    streams: HashMap<ContextId, StreamId>,
    inbox: Vec<Delivery>,
}

struct Queue {
    from: ContextId,
    to: ContextId,
    /// The receiving node's id for this stream.
    sid: StreamId,
    msgs: VecDeque<Message>,
    open: bool,
}

/// N router cores joined by in-memory streams under a virtual clock.
pub struct Mesh {
    nodes: Vec<Node>,
    queues: Vec<Queue>,
    unidirectional: bool,
    max_message_size: usize,
    epoch: Instant,
    clock: Duration,
    next_tag: Tag,
    next_handle: u32,
    dropped: Vec<Dropped>,
    steps: u64,
    /// Steps one `drive` may take before it is declared a loop.
    pub step_limit: u64,
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
            queues: Vec::new(),
            unidirectional,
            max_message_size,
            epoch: Instant::now(),
            clock: Duration::ZERO,
            next_tag: 1,
            next_handle: 1000,
            dropped: Vec::new(),
            steps: 0,
            step_limit: 1_000_000,
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

    /// Starts a new context as a child of `parent` and returns its id; the
    /// ADD_ROUTE announcements it causes are queued (run [`Mesh::drive`]).
    ///
    /// # Panics
    /// If `parent` is not a live node.
    pub fn spawn(&mut self, parent: ContextId) -> ContextId {
        assert!(self.is_alive(parent), "{parent} is not alive");
        let child = self.add_node(Some(parent));
        self.nodes[parent.0 as usize].children.push(child);
        // Queue indexes: parent -> child, child -> parent.
        let (down, up) = (self.queues.len(), self.queues.len() + 1);
        let (sid_p, sid_c) = (StreamId(down), StreamId(up));
        self.queues.push(Queue {
            from: parent,
            to: child,
            sid: sid_c,
            msgs: VecDeque::new(),
            open: true,
        });
        self.queues.push(Queue {
            from: child,
            to: parent,
            sid: sid_p,
            msgs: VecDeque::new(),
            open: true,
        });
        self.nodes[parent.0 as usize].streams.insert(child, sid_p);
        self.nodes[child.0 as usize].streams.insert(parent, sid_c);
        let name = format!("mesh.{}", child.0);
        self.with_core(child, |core, out| {
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
        self.with_core(parent, |core, out| {
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
        // Whatever was in flight to or from the dead is lost with them.
        for q in &mut self.queues {
            if doomed.contains(&q.to) || doomed.contains(&q.from) {
                q.open = false;
                q.msgs.clear();
            }
        }
        if let Some(parent) = self.nodes[node.0 as usize].parent {
            if let Some(sid) = self.nodes[parent.0 as usize].streams.get(&node).copied() {
                self.with_core(parent, |core, out| {
                    core.stream_closed(sid, "killed", out);
                });
            }
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
        self.with_core(node, |core, out| core.route(msg, None, out));
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

    /// Moves one message; false when every queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(qi) = self
            .queues
            .iter()
            .position(|q| q.open && !q.msgs.is_empty())
        else {
            return false;
        };
        let (to, sid) = (self.queues[qi].to, self.queues[qi].sid);
        let Some(msg) = self.queues[qi].msgs.pop_front() else {
            return false;
        };
        self.steps += 1;
        self.with_core(to, |core, out| core.route(msg, Some(sid), out));
        true
    }

    /// Steps until every queue is empty; returns the steps taken.
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
    pub fn core(&self, node: ContextId) -> Option<&RouterCore<Tag, Pipe>> {
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

    fn core_mut(&mut self, node: ContextId) -> Option<&mut RouterCore<Tag, Pipe>> {
        self.nodes.get_mut(node.0 as usize)?.core.as_mut()
    }

    /// Runs `f` on `node`'s core and carries out the actions it produced.
    fn with_core(
        &mut self,
        node: ContextId,
        f: impl FnOnce(&mut RouterCore<Tag, Pipe>, &mut Vec<Action<Tag, Pipe>>),
    ) {
        let mut actions = Vec::new();
        match self.core_mut(node) {
            Some(core) => f(core, &mut actions),
            None => return,
        }
        for a in actions {
            match a {
                Action::Transmit { out, msg, .. } => {
                    if let Some(q) = self.queues.get_mut(out) {
                        if q.open {
                            q.msgs.push_back(msg);
                        }
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

/// The body of the `mesh` fuzz target: runs the operations `data` encodes
/// (spawn, kill, listen, send with any ids, call-like requests, drive) on a
/// mesh and checks, after each, that:
/// - every message delivered to a listener came from a node on the tree
///   path to its `src_id` and to its `auth_id`, or from above the receiver
///   (whose ids it reaches through its parent): no forged source passes;
/// - nothing reached a listener its policy refuses (checked against the
///   mesh's own topology, not the core's tables);
/// - after driving, no live node still waits on a dead one;
/// - driving settles (no message loops).
///
/// # Panics
/// When an invariant does not hold.
pub fn fuzz_ops(data: &[u8]) {
    let mut mesh = Mesh::new();
    mesh.step_limit = 200_000;
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    // Listener tag -> (node, policy kind).
    let mut listeners: Vec<(ContextId, Handle, Tag, u8)> = Vec::new();
    // Payload nonce -> the node that really sent it.
    let mut origin: HashMap<u64, ContextId> = HashMap::new();
    let mut nonce = 0u64;
    let mut checked = vec![0usize; 1];
    while let Some(op) = next() {
        let live: Vec<ContextId> = mesh.nodes().filter(|n| mesh.is_alive(*n)).collect();
        let pick = |b: Option<u8>| live[b.unwrap_or(0) as usize % live.len()];
        let any_id =
            |b: Option<u8>, n: usize| ContextId(u32::from(b.unwrap_or(0)) % (n as u32 + 2));
        match op % 6 {
            0 if mesh.nodes.len() < 16 => {
                let parent = pick(next());
                mesh.spawn(parent);
            }
            1 => {
                let victim = pick(next());
                mesh.kill(victim);
            }
            2 => {
                let node = pick(next());
                let kind = next().unwrap_or(0) % 3;
                let policy = match kind {
                    0 => Policy::Any,
                    1 => Policy::ParentAuthority,
                    _ => Policy::ImmediateChild,
                };
                let (h, tag) = mesh.listen(node, policy, None);
                listeners.push((node, h, tag, kind));
            }
            3 | 4 if !listeners.is_empty() => {
                let from = pick(next());
                let (_, h, _, _) = listeners[next().unwrap_or(0) as usize % listeners.len()];
                let n = mesh.nodes.len();
                let dst = any_id(next(), n);
                nonce += 1;
                origin.insert(nonce, from);
                let mut m = Message::bytes(dst, h, nonce.to_be_bytes().to_vec());
                if op % 6 == 3 {
                    // Any source fields: forgeries included.
                    m.src_id = any_id(next(), n);
                    m.auth_id = any_id(next(), n);
                    mesh.send(from, m);
                } else if mesh.is_alive(dst) {
                    // A call-like request that waits on `dst`.
                    let (reply, _) = mesh.listen(from, Policy::Respondent(dst), Some(dst));
                    m.reply_to = reply;
                    mesh.send_stamped(from, m);
                }
            }
            _ => {
                mesh.drive();
                check_no_waits_on_the_dead(&mesh);
            }
        }
        check_deliveries(&mesh, &listeners, &origin, &mut checked);
    }
    mesh.drive();
    check_deliveries(&mesh, &listeners, &origin, &mut checked);
    check_no_waits_on_the_dead(&mesh);
}

fn check_deliveries(
    mesh: &Mesh,
    listeners: &[(ContextId, Handle, Tag, u8)],
    origin: &HashMap<u64, ContextId>,
    checked: &mut Vec<usize>,
) {
    checked.resize(mesh.nodes.len(), 0);
    for r in mesh.nodes() {
        let inbox = mesh.inbox(r);
        for d in &inbox[checked[r.0 as usize]..] {
            let Some(&(_, _, _, kind)) = listeners.iter().find(|l| l.0 == r && l.2 == d.tag) else {
                continue; // a reply listener
            };
            let nonce = <[u8; 8]>::try_from(&d.msg.data[..]).map(u64::from_be_bytes);
            let Some(&o) = nonce.ok().and_then(|n| origin.get(&n)) else {
                continue; // a dead notice, made by a router
            };
            if o != r {
                for claimed in [d.msg.src_id, d.msg.auth_id] {
                    // The reverse-path rule: an id a router does not know
                    // (never spawned, dead, or spawned so recently that its
                    // route is still on its way up) is reached through the
                    // parent, so whatever is above the receiver may claim
                    // it. Below and beside the receiver, only the path to
                    // the claimed context can.
                    let toward = if mesh.path(r, ContextId(0)).contains(&o) {
                        ContextId(0)
                    } else {
                        claimed
                    };
                    assert!(
                        mesh.path(r, toward).contains(&o),
                        "{r} accepted a message from {o} claiming {claimed}: {:?}",
                        d.msg
                    );
                }
            }
            let mut ancestors = Vec::new();
            let mut p = mesh.parent_of(r);
            while let Some(a) = p {
                ancestors.push(a);
                p = mesh.parent_of(a);
            }
            match kind {
                1 => assert!(
                    d.msg.auth_id == r || ancestors.contains(&d.msg.auth_id),
                    "{r} let {:?} through a parent-authority policy",
                    d.msg
                ),
                2 => assert!(
                    mesh.parent_of(d.msg.src_id) == Some(r) && o != r,
                    "{r} let {:?} through an immediate-child policy",
                    d.msg
                ),
                _ => {}
            }
        }
        checked[r.0 as usize] = inbox.len();
    }
}

fn check_no_waits_on_the_dead(mesh: &Mesh) {
    for n in mesh.nodes() {
        let Some(core) = mesh.core(n) else { continue };
        for (h, handler) in core.handlers() {
            if let Some(x) = handler.respondent {
                assert!(
                    mesh.is_alive(x),
                    "{n} still waits (handle {h}) on {x}, which is dead"
                );
            }
        }
    }
}
