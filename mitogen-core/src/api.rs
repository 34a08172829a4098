//! `Router`: the handle user code holds on its context's router.

use crate::broker::{Broker, Upkeep};
use crate::call::{CallState, Registry};
use crate::channel::Receiver;
use crate::cmd::{self, Cmd, Registration};
use crate::context::Context;
use crate::error::{ConnectError, Error};
use crate::ids::{ContextId, Handle};
use crate::ids_alloc::IdAllocator;
use crate::logfwd::LevelSync;
use crate::message::{Message, codec::DEFAULT_MAX_MESSAGE_SIZE};
use crate::policy::{Policy, Source};
use crate::router::{HandlerEntry, Identity, Shared, Sink};
use crate::stream::{StreamId, StreamOut};
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// A connection method: how to start a new context (`local`, `ssh`, `sudo`, ...).
///
/// Its options are serialisable so that [`Router::connect_via`] can ask an
/// intermediary context to connect onward with them; register the method on
/// both ends with [`Registry::add_method`] (the built-in
/// [`crate::Local`] always is).
pub trait Method: Serialize + DeserializeOwned + 'static {
    /// The name the method is registered under.
    const NAME: &'static str;

    /// Starts the new context as a child of `router`'s context.
    ///
    /// # Errors
    /// [`ConnectError`] naming the stage that failed.
    fn connect(&self, router: &Router) -> Result<Context, ConnectError>;
}

/// Options for a controller's router ([`crate::init_with`], [`Router::new`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterOptions {
    /// Largest payload accepted or sent; inherited by every context below.
    pub max_message_size: usize,
    /// Unidirectional routing: contexts may talk only to their parent and
    /// children, never to siblings through it. Inherited.
    pub unidirectional: bool,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            unidirectional: false,
        }
    }
}

impl RouterOptions {
    /// The defaults: 128 MiB messages, bidirectional routing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`RouterOptions::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`RouterOptions::unidirectional`].
    pub fn unidirectional(mut self, on: bool) -> Self {
        self.unidirectional = on;
        self
    }
}

/// A context's state: the driver of its router core ([`Shared`]) and what
/// the modules above the router keep per context, each in its own type.
pub(crate) struct Node {
    /// Drives the router core (routes, handlers, streams).
    pub(crate) shared: Arc<Shared>,
    /// The functions and methods this program knows (`call.rs`).
    pub(crate) registry: Arc<Registry>,
    /// Context ids for new children (`ids_alloc.rs`).
    pub(crate) ids: IdAllocator,
    /// The call the main thread runs and the calls whose callers gave up
    /// (`call.rs`).
    pub(crate) calls: CallState,
    /// The log level last sent to the children (`logfwd.rs`).
    pub(crate) log: LevelSync,
    /// Set by the built-in detach: when the parent goes, the broker lets
    /// queued calls finish instead of exiting.
    pub(crate) detached: AtomicBool,
    /// The broker thread, joined by shutdown.
    pub(crate) broker_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Per-router state of higher layers ([`crate::layer::LayerRouter::extension`]),
    /// dropped when the broker exits.
    pub(crate) extensions: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Node {
    /// This context's id.
    pub(crate) fn me(&self) -> ContextId {
        self.shared.me()
    }

    /// Routes a message from this context (sets `src_id` and `auth_id`),
    /// first telling the children of a changed log level.
    pub(crate) fn send_stamped(&self, mut msg: Message) {
        self.log.sync(&self.shared);
        msg.src_id = self.shared.me();
        msg.auth_id = self.shared.me();
        self.shared.route(msg);
    }
}

impl Upkeep for Node {
    fn turn(&self) {
        self.log.sync(&self.shared);
    }

    fn dump(&self, reaping: usize) {
        crate::diag::dump(&self.shared, self.calls.current(), reaping);
    }

    fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    fn finish(&self) {
        let ext = std::mem::take(&mut *self.extensions.lock());
        drop(ext);
    }
}

/// Shuts the router down when the last user handle is dropped.
struct Owner(Arc<Node>);
impl Drop for Owner {
    fn drop(&mut self) {
        shutdown(&self.0);
    }
}

/// The router of this process's context. Cheap to clone.
///
/// In the controller it is made by [`crate::init`]; dropping the last clone
/// (and every [`Context`] made from it) shuts the tree down: children see
/// their stream close and exit, and are reaped. In an agent, functions reach
/// it through [`crate::CallCx::router`].
#[derive(Clone)]
pub struct Router {
    pub(crate) node: Arc<Node>,
    _owner: Option<Arc<Owner>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish()
    }
}

impl Router {
    /// Starts a controller router (context 0) with `registry`.
    ///
    /// Most programs call [`crate::init`] instead, which also turns the
    /// process into an agent when it was started as one.
    ///
    /// # Errors
    /// [`Error::Start`] if the broker thread cannot start.
    pub fn new(options: RouterOptions, registry: Registry) -> Result<Self, Error> {
        let identity = Identity {
            me: ContextId::CONTROLLER,
            name: "controller".into(),
            ancestors: Vec::new(),
            unidirectional: options.unidirectional,
            max_message_size: options.max_message_size.min(u32::MAX as usize),
        };
        let node = start(identity, Arc::new(registry))?;
        install_controller_handlers(&node);
        let router = Self::owning(node);
        router.node.registry.run_start_hooks(&router);
        Ok(router)
    }

    pub(crate) fn owning(node: Arc<Node>) -> Self {
        Self {
            _owner: Some(Arc::new(Owner(node.clone()))),
            node,
        }
    }

    pub(crate) fn borrowed(node: Arc<Node>) -> Self {
        Self { node, _owner: None }
    }

    /// The router driver.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.node.shared
    }

    /// This context's id (0 in the controller).
    pub fn id(&self) -> ContextId {
        self.node.me()
    }

    /// This context's name.
    pub fn name(&self) -> &str {
        &self.shared().id.name
    }

    /// The parent's id, `None` in the controller.
    pub fn parent_id(&self) -> Option<ContextId> {
        self.shared().parent()
    }

    /// The function registry.
    pub fn registry(&self) -> &Registry {
        &self.node.registry
    }

    /// Starts a new child context with `method` (e.g. [`crate::Local`]).
    ///
    /// # Errors
    /// [`ConnectError`] naming the stage that failed.
    pub fn connect<M: Method>(&self, method: &M) -> Result<Context, ConnectError> {
        if self.shared().is_shut_down() {
            return Err(ConnectError::Shutdown);
        }
        method.connect(self)
    }

    /// Starts a new context as a child of `via`: `via` runs `method` itself,
    /// so the new context is reachable only through it.
    ///
    /// # Errors
    /// [`ConnectError::Via`] with what the intermediary reported.
    pub fn connect_via<M: Method>(
        &self,
        method: &M,
        via: &Context,
    ) -> Result<Context, ConnectError> {
        let opts =
            postcard::to_stdvec(method).map_err(|e| ConnectError::BadOptions(e.to_string()))?;
        let (id, name) = via
            .call::<crate::builtin::ProxyConnect>(&(M::NAME.to_owned(), opts))
            .map_err(|source| ConnectError::Via {
                via: via.id(),
                source,
            })?;
        self.shared().core.lock().set_name(id, name.as_str().into());
        Ok(Context::new(self.clone(), id, name.into()))
    }

    /// A handle on an already connected context, by id.
    pub fn context(&self, id: ContextId) -> Context {
        Context::new(self.clone(), id, self.shared().name_of(id))
    }

    /// A new receiver accepting messages from any (source-verified) context.
    pub fn receiver(&self) -> Receiver {
        self.receiver_with(Policy::Any)
    }

    /// A new receiver with a policy.
    pub fn receiver_with(&self, policy: Policy) -> Receiver {
        Receiver::new(self.shared().clone(), policy, None, true, "receiver")
    }

    pub(crate) fn receiver_for(
        &self,
        policy: Policy,
        respondent: Option<ContextId>,
        label: &'static str,
    ) -> Receiver {
        Receiver::new(self.shared().clone(), policy, respondent, false, label)
    }

    /// Whether this router has shut down (or is shutting down).
    pub fn is_shut_down(&self) -> bool {
        self.shared().is_shut_down()
    }

    /// How many replies this context is waiting for from `ctx` (calls in
    /// flight, and other receivers bound to it): zero means idle.
    pub fn pending_calls(&self, ctx: ContextId) -> usize {
        self.shared().core.lock().pending_from(ctx)
    }

    /// Whether `ctx` is currently routable from here.
    pub fn is_connected(&self, ctx: ContextId) -> bool {
        self.shared().core.lock().is_connected(ctx)
    }

    /// Shuts the router down now: children are told (their streams close),
    /// reaped, and every waiting receiver fails. Idempotent.
    pub fn shutdown(&self) {
        shutdown(&self.node);
    }
}

fn shutdown(node: &Node) {
    let handle = node.broker_thread.lock().take();
    let Some(handle) = handle else { return };
    node.shared.broker_cmd(Cmd::Shutdown(None));
    if handle.thread().id() != std::thread::current().id() {
        let _ = handle.join();
    }
}

/// Starts a router's broker thread and the handlers every context has.
pub(crate) fn start(identity: Identity, registry: Arc<Registry>) -> Result<Arc<Node>, Error> {
    let (btx, poll, cmds) = cmd::channel().map_err(Error::Start)?;
    let is_controller = identity.me == ContextId::CONTROLLER;
    let shared = Arc::new(Shared::new(identity, btx));
    let node = Arc::new(Node {
        shared: shared.clone(),
        registry,
        ids: IdAllocator::new(is_controller),
        calls: CallState::default(),
        log: LevelSync::new(log::max_level()),
        detached: AtomicBool::new(false),
        broker_thread: Mutex::new(None),
        extensions: Mutex::new(HashMap::new()),
    });
    let broker = Broker::new(poll, cmds, shared, node.clone());
    let handle = std::thread::Builder::new()
        .name("mitogen-broker".into())
        .spawn(move || broker.run())
        .map_err(Error::Start)?;
    *node.broker_thread.lock() = Some(handle);
    Ok(node)
}

/// Installs an internal handler function that gets the context's state
/// (held weakly: handlers live in the core the state owns).
pub(crate) fn fn_handler(
    node: &Arc<Node>,
    handle: Handle,
    policy: Policy,
    label: &'static str,
    f: impl Fn(&Arc<Node>, Message, Option<StreamId>) + Send + Sync + 'static,
) {
    let weak: Weak<Node> = Arc::downgrade(node);
    let sink = Sink::Fn(Arc::new(move |m, from, _: &Source| {
        if let Some(s) = weak.upgrade() {
            f(&s, m, from);
        }
    }));
    node.shared.add_handler(
        handle,
        HandlerEntry {
            policy,
            sink,
            persist: true,
            respondent: None,
            label,
            since: Instant::now(),
        },
    );
}

fn install_controller_handlers(node: &Arc<Node>) {
    fn_handler(
        node,
        Handle::ALLOCATE_ID,
        Policy::Any,
        "allocate-id",
        |s, m, _| {
            let reply = match s.ids.reserve(crate::ids_alloc::BLOCK_SIZE) {
                Some(block) => Message::typed(m.src_id, m.reply_to, &block).ok(),
                None => m.dead_reply(s.me(), "context id space exhausted"),
            };
            if let Some(mut r) = reply {
                r.src_id = s.me();
                r.auth_id = s.me();
                s.shared.route(r);
            }
        },
    );
    fn_handler(
        node,
        Handle::FORWARD_LOG,
        Policy::Any,
        "forward-log",
        |s, m, _| {
            crate::logfwd::emit(&s.shared, &m);
        },
    );
}

static NEXT_STREAM: AtomicUsize = AtomicUsize::new(1);

/// The parts of a new stream.
pub(crate) struct NewStream {
    pub(crate) remote: ContextId,
    pub(crate) name: Arc<str>,
    pub(crate) is_parent: bool,
    pub(crate) rx: File,
    /// `None` when writes go to `rx`'s fd too.
    pub(crate) tx: Option<File>,
    pub(crate) child: Option<std::process::Child>,
    pub(crate) logs: Vec<File>,
    pub(crate) keep: Vec<File>,
    pub(crate) initial: bytes::BytesMut,
}

/// Adds a stream to the route table and hands it to the broker.
pub(crate) fn add_stream(shared: &Shared, s: NewStream) {
    let sid = StreamId(NEXT_STREAM.fetch_add(1, Ordering::Relaxed));
    let rx = Arc::new(s.rx);
    let separate = s.tx.map(Arc::new);
    let tx = separate.clone().unwrap_or_else(|| rx.clone());
    let broker = shared.broker.clone();
    let out = Arc::new(StreamOut::new(
        sid,
        shared.me(),
        s.remote,
        s.name.clone(),
        s.is_parent,
        tx,
        Box::new(move || broker.send(Cmd::WantWrite(sid))),
    ));
    // The core records the route (and announces a child's upward).
    shared.stream_opened(out.clone());
    shared.broker_cmd(Cmd::Register(Registration {
        out,
        rx,
        separate_tx: separate,
        child: s.child,
        logs: s.logs,
        keep: s.keep,
        initial: s.initial,
    }));
}
