//! Typed calls: functions registered by name, run in a remote context.
//!
//! Both ends run the same binary and register the same functions, so a call
//! carries only the function's name and its serde-encoded arguments:
//!
//! ```text
//! caller thread                         agent main thread
//! Context::call::<F>(&args) ──CALL_FUNCTION(name, chain, args)──► Registry lookup
//!   waits on a reply handle ◄──reply: Ok(output) | Err(CallErrorKind)── F::call (panics caught)
//! ```

use crate::error::{CallError, CallErrorKind};
use crate::ids::{ContextId, Handle};
use crate::message::{self, Enc, Message};
use crate::remote_error::{ErrorType, ErrorTypes, RemoteError};
use crate::{Context, Router};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The error a [`Function`] returns; it reaches the caller as
/// [`CallErrorKind::Failed`] with its message and source chain.
pub type FnError = Box<dyn std::error::Error + Send + Sync>;

/// A function that can be called in a remote context.
///
/// Register it on both ends with [`Registry::add`] (same binary, same
/// registration), then call it with [`Context::call`].
///
/// ```
/// use mitogen_core::{CallCx, FnError, Function};
///
/// /// Adds two numbers, remotely.
/// pub struct Add;
/// impl Function for Add {
///     const NAME: &'static str = "example::add";
///     type Args = (i64, i64);
///     type Output = i64;
///     fn call(_cx: &CallCx<'_>, (a, b): (i64, i64)) -> Result<i64, FnError> {
///         a.checked_add(b).ok_or_else(|| "overflow".into())
///     }
/// }
///
/// let registry = mitogen_core::Registry::new(|reg| {
///     reg.add::<Add>();
/// });
/// assert!(registry.contains("example::add"));
/// ```
pub trait Function: 'static {
    /// The name calls use; unique in the registry.
    const NAME: &'static str;
    /// The arguments, serialised by the caller.
    type Args: Serialize + DeserializeOwned;
    /// The result, serialised by the callee.
    type Output: Serialize + DeserializeOwned;
    /// Runs the function in the called context (on the agent's main thread).
    ///
    /// # Errors
    /// Whatever the function decides; the caller sees it as a [`CallError`].
    fn call(cx: &CallCx<'_>, args: Self::Args) -> Result<Self::Output, FnError>;
}

/// What a running [`Function`] knows about its call.
#[derive(Debug)]
pub struct CallCx<'a> {
    router: &'a Router,
    caller: ContextId,
    reply_to: Handle,
}

impl CallCx<'_> {
    /// The router of the context the function runs in: use it to start
    /// children, send to a [`crate::Sender`], or open receivers.
    pub fn router(&self) -> &Router {
        self.router
    }

    /// The context that made the call.
    pub fn caller(&self) -> ContextId {
        self.caller
    }

    /// Whether the caller gave up waiting (its deadline passed, or it
    /// dropped the [`crate::PendingCall`]). A long function should check it
    /// now and then and return early: calls in one context run one at a
    /// time, so every later call waits for this one. Always false for calls
    /// that wanted no reply.
    pub fn is_cancelled(&self) -> bool {
        self.reply_to != Handle::NONE
            && self
                .router
                .node
                .calls
                .cancelled
                .lock()
                .contains(&(self.caller, self.reply_to))
    }
}

impl RemoteError {
    /// Captures `e` and its sources; the first of a type registered in
    /// `registry` ([`Registry::add_error`]) is kept typed.
    pub fn capture(e: &(dyn std::error::Error + 'static), registry: &Registry) -> Self {
        Self::capture_with(e, &registry.errors)
    }
}

/// Cancelled-call records kept before they are dropped in bulk.
const CANCELLED_MAX: usize = 4096;

/// What a context keeps about calls: the one its main thread is running
/// (for the diagnostic dump) and those whose callers gave up.
#[derive(Default)]
pub(crate) struct CallState {
    current: parking_lot::Mutex<Option<(String, std::time::Instant)>>,
    /// Calls whose callers gave up: (caller, reply handle).
    cancelled: parking_lot::Mutex<std::collections::HashSet<(ContextId, Handle)>>,
}

impl CallState {
    /// The call the main thread is running, and since when.
    pub(crate) fn current(&self) -> Option<(String, std::time::Instant)> {
        self.current.lock().clone()
    }

    /// The caller `caller` gave up on the call whose reply goes to
    /// `reply_to`. Bounded: records of calls that already ended are
    /// forgotten in bulk.
    pub(crate) fn cancel(&self, caller: ContextId, reply_to: Handle) {
        let mut set = self.cancelled.lock();
        if set.len() >= CANCELLED_MAX {
            set.clear();
        }
        set.insert((caller, reply_to));
    }
}

type Thunk =
    Box<dyn Fn(&CallCx<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallErrorKind> + Send + Sync>;
type MethodThunk =
    Box<dyn Fn(&Router, &[u8]) -> Result<Context, crate::ConnectError> + Send + Sync>;

/// The functions and connection methods a program knows by name.
///
/// Built by [`crate::init`] (or [`Registry::new`]) from the program's
/// registration function, so controller and agents register the same set.
pub struct Registry {
    fns: BTreeMap<&'static str, (Thunk, String)>,
    pub(crate) errors: ErrorTypes,
    methods: BTreeMap<&'static str, MethodThunk>,
    on_start: Vec<(&'static str, StartHook)>,
}

type StartHook = Box<dyn Fn(&Router) + Send + Sync>;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.fns.keys().collect::<Vec<_>>())
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// A registry with the built-in functions and methods, plus whatever
    /// `register` adds.
    pub fn new(register: impl FnOnce(&mut Self)) -> Self {
        let mut reg = Self {
            fns: BTreeMap::new(),
            errors: ErrorTypes::default(),
            methods: BTreeMap::new(),
            on_start: Vec::new(),
        };
        crate::builtin::register(&mut reg);
        register(&mut reg);
        reg
    }

    /// Registers function `F`. A second registration of the same name
    /// replaces the first.
    pub fn add<F: Function>(&mut self) -> &mut Self {
        let sig = format!(
            "{}({})->{}",
            F::NAME,
            std::any::type_name::<F::Args>(),
            std::any::type_name::<F::Output>()
        );
        let thunk: Thunk = Box::new(|cx, args, out| {
            let args: F::Args = postcard::from_bytes(args)
                .map_err(|e| CallErrorKind::BadArguments(e.to_string()))?;
            let value = F::call(cx, args).map_err(|e| {
                CallErrorKind::Failed(RemoteError::capture(&*e, cx.router.registry()))
            })?;
            let buf = std::mem::take(out);
            *out = postcard::to_extend(&value, buf)
                .map_err(|e| CallErrorKind::BadResult(e.to_string()))?;
            Ok(())
        });
        self.fns.insert(F::NAME, (thunk, sig));
        self
    }

    /// Registers an error type that keeps its type across hops: a function
    /// failing with it (or with an error that has it as a source) is seen
    /// by the caller as [`CallErrorKind::Failed`] whose source chain holds
    /// the value ([`CallError::downcast_ref`]). Register it on both ends.
    pub fn add_error<T: ErrorType>(&mut self) -> &mut Self {
        self.errors.add::<T>();
        self
    }

    /// Registers a connection method, so other contexts can ask this one to
    /// connect onward ([`crate::Router::connect_via`]).
    pub fn add_method<M: crate::Method>(&mut self) -> &mut Self {
        let thunk: MethodThunk = Box::new(|router, opts| {
            let m: M = postcard::from_bytes(opts)
                .map_err(|e| crate::ConnectError::BadOptions(e.to_string()))?;
            router.connect(&m)
        });
        self.methods.insert(M::NAME, thunk);
        self
    }

    /// Runs `hook` in every context right after its router starts (the
    /// controller's and every agent's), before any message is read: how
    /// higher layers install their own handlers, e.g. `mitogen-service`'s
    /// CALL_SERVICE. In an agent the parent stream is not attached yet, so a
    /// hook must not send. `name` identifies the hook in the registry
    /// fingerprint.
    pub fn on_start(
        &mut self,
        name: &'static str,
        hook: impl Fn(&Router) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_start.push((name, Box::new(hook)));
        self
    }

    pub(crate) fn run_start_hooks(&self, router: &Router) {
        for (_, hook) in &self.on_start {
            hook(router);
        }
    }

    /// Whether a function of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.fns.contains_key(name)
    }

    /// A fingerprint of the protocol version and every registered function's
    /// name and signature; agents must match their controller's.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv::default();
        h.write(crate::PROTOCOL_VERSION.as_bytes());
        for (_, sig) in self.fns.values() {
            h.write(sig.as_bytes());
            h.write(b"\0");
        }
        for name in self
            .methods
            .keys()
            .chain(self.on_start.iter().map(|(n, _)| n))
            .chain(self.errors.codes())
        {
            h.write(name.as_bytes());
            h.write(b"\0");
        }
        h.0
    }

    pub(crate) fn method(&self, name: &str) -> Option<&MethodThunk> {
        self.methods.get(name)
    }

    fn invoke(
        &self,
        name: &str,
        cx: &CallCx<'_>,
        args: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CallErrorKind> {
        let (thunk, _) = self.fns.get(name).ok_or(CallErrorKind::UnknownFunction)?;
        match catch_unwind(AssertUnwindSafe(|| thunk(cx, args, out))) {
            Ok(r) => r,
            Err(panic) => Err(CallErrorKind::Panicked(panic_message(&*panic))),
        }
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
struct Fnv(u64);
impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The text of a caught panic's payload (`&str` or `String` payloads;
/// others are named as such): how every layer reports a panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Identifies a call chain: the caller's context id and a per-process nonce.
pub(crate) type ChainId = (u32, u64);

#[derive(Serialize, Deserialize)]
pub(crate) struct CallHead<'a> {
    #[serde(borrow)]
    pub(crate) func: &'a str,
    pub(crate) chain: Option<ChainId>,
}

pub(crate) type ReplyHead = Result<(), CallErrorKind>;

/// Builds the CALL_FUNCTION message for `F` with `args`.
pub(crate) fn request<F: Function>(
    dst: ContextId,
    args: &F::Args,
    chain: Option<ChainId>,
) -> Result<Message, message::PayloadError> {
    let head = CallHead {
        func: F::NAME,
        chain,
    };
    let buf = postcard::to_stdvec(&head).map_err(message::PayloadError::encode::<CallHead<'_>>)?;
    let buf = postcard::to_extend(args, buf).map_err(message::PayloadError::encode::<F::Args>)?;
    Ok(Message {
        enc: Enc::TYPED,
        ..Message::bytes(dst, Handle::CALL_FUNCTION, buf)
    })
}

/// Decodes a call reply (or the dead message that replaced it); typed
/// remote errors are revived with `registry`.
pub(crate) fn decode_reply<T: DeserializeOwned>(
    msg: &Message,
    registry: &Registry,
) -> Result<T, CallErrorKind> {
    if let Some(reason) = msg.dead_reason() {
        return Err(classify_dead(reason));
    }
    let (head, tail): (ReplyHead, &[u8]) = message::decode_with_tail(&msg.data)
        .map_err(|e| CallErrorKind::BadResult(e.to_string()))?;
    if let Err(mut kind) = head {
        revive(&mut kind, registry);
        return Err(kind);
    }
    postcard::from_bytes(tail).map_err(|e| CallErrorKind::BadResult(e.to_string()))
}

fn revive(kind: &mut CallErrorKind, registry: &Registry) {
    match kind {
        CallErrorKind::Failed(re) => registry.errors.revive(re),
        CallErrorKind::ChainAborted { cause, .. } => revive(cause, registry),
        _ => {}
    }
}

/// The kind of error a dead reply's reason stands for.
pub(crate) fn classify_dead(reason: String) -> CallErrorKind {
    if reason.starts_with(message::DEAD_DISCONNECTED) || reason == message::DEAD_SHUTDOWN {
        CallErrorKind::Disconnected(reason)
    } else if reason.starts_with(message::DEAD_TOO_LARGE) {
        CallErrorKind::TooLarge(reason)
    } else {
        CallErrorKind::Refused(reason)
    }
}

impl CallError {
    pub(crate) fn new(ctx: &Context, function: &str, kind: CallErrorKind) -> Self {
        Self {
            context: ctx.id(),
            context_name: ctx.name().to_owned(),
            function: function.to_owned(),
            kind,
        }
    }
}

/// Answers `request` (a message sent by [`Context::request`] or a call)
/// with `result`, in the standard reply format. Nothing is sent when the
/// request wanted no reply.
///
/// # Errors
/// [`message::PayloadError`] if the value cannot be encoded (the caller
/// then gets a `BadResult` error instead).
pub fn send_reply<T: Serialize + ?Sized>(
    router: &Router,
    request: &Message,
    result: Result<&T, CallErrorKind>,
) -> Result<(), message::PayloadError> {
    match result.map(message::encode_payload) {
        Ok(Ok(bytes)) => send_encoded_reply(router, request, Ok(&bytes)),
        Ok(Err(e)) => {
            // The caller still gets an answer; our caller gets the reason.
            send_encoded_reply(
                router,
                request,
                Err(CallErrorKind::BadResult(e.to_string())),
            )?;
            Err(e)
        }
        Err(kind) => send_encoded_reply(router, request, Err(kind)),
    }
}

/// [`send_reply`] with the value already encoded (by
/// [`message::encode_payload`]), for dispatchers that encode on their own.
pub fn send_encoded_reply(
    router: &Router,
    request: &Message,
    result: Result<&[u8], CallErrorKind>,
) -> Result<(), message::PayloadError> {
    let data = match result {
        Ok(bytes) => {
            let head = postcard::to_stdvec(&ReplyHead::Ok(()))
                .map_err(message::PayloadError::encode::<ReplyHead>)?;
            let mut data = head;
            data.extend_from_slice(bytes);
            data
        }
        Err(kind) => postcard::to_stdvec(&ReplyHead::Err(kind)).unwrap_or_default(),
    };
    route_reply(router.shared(), request, data);
    Ok(())
}

/// Routes a reply in the standard format to whoever sent `request`, if it
/// wants one.
fn route_reply(shared: &crate::router::Shared, request: &Message, mut data: Vec<u8>) {
    if request.reply_to == Handle::NONE {
        return;
    }
    let limit = shared.id.max_message_size;
    if data.len() > limit {
        // Routing it would only drop it (a reply wants no dead reply): tell
        // the caller instead of leaving it waiting.
        let kind = CallErrorKind::TooLarge(format!(
            "the reply is {} bytes, over max_message_size ({limit} bytes)",
            data.len()
        ));
        log::warn!("{}: {kind}", shared.id.name);
        data = postcard::to_stdvec(&ReplyHead::Err(kind)).unwrap_or_default();
    }
    let me = shared.me();
    shared.route(Message {
        enc: Enc::TYPED,
        dst_id: request.src_id,
        src_id: me,
        auth_id: me,
        handle: request.reply_to,
        reply_to: Handle::NONE,
        data: data.into(),
    });
}

/// Runs calls in arrival order; used by the agent's main thread.
pub(crate) struct Executor {
    router: Router,
    failed_chains: HashMap<ChainId, (String, CallErrorKind)>,
}

impl Executor {
    pub(crate) fn new(router: Router) -> Self {
        Self {
            router,
            failed_chains: HashMap::new(),
        }
    }

    /// Forgets a chain's failure ([`crate::CallChain::reset`]).
    pub(crate) fn forget_chain(&mut self, chain: ChainId) {
        self.failed_chains.remove(&chain);
    }

    fn run(
        &mut self,
        func: &str,
        chain: Option<ChainId>,
        (caller, reply_to): (ContextId, Handle),
        args: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CallErrorKind> {
        if func == crate::builtin::FORGET_CHAIN {
            if let Some(c) = chain {
                self.forget_chain(c);
            }
        } else if let Some((f, cause)) = chain.and_then(|c| self.failed_chains.get(&c)) {
            return Err(CallErrorKind::ChainAborted {
                function: f.clone(),
                cause: Box::new(cause.clone()),
            });
        }
        let node = &self.router.node;
        *node.calls.current.lock() = Some((func.to_owned(), std::time::Instant::now()));
        let cx = CallCx {
            router: &self.router,
            caller,
            reply_to,
        };
        let r = node.registry.invoke(func, &cx, args, out);
        *node.calls.current.lock() = None;
        if let (Err(kind), Some(chain)) = (&r, chain) {
            self.failed_chains
                .insert(chain, (func.to_owned(), kind.clone()));
        }
        r
    }

    pub(crate) fn handle(&mut self, msg: Message) {
        let mut out = postcard::to_stdvec(&ReplyHead::Ok(())).unwrap_or_default();
        let (func, result) = match message::decode_with_tail::<CallHead<'_>>(&msg.data) {
            Err(e) => (
                "?".to_owned(),
                Err(CallErrorKind::BadArguments(e.to_string())),
            ),
            Ok((head, args)) => {
                let func = head.func.to_owned();
                let key = (msg.src_id, msg.reply_to);
                let skip = msg.reply_to != Handle::NONE
                    && self.router.node.calls.cancelled.lock().remove(&key);
                let result = if skip {
                    log::debug!("call to {func} skipped: its caller gave up before it started");
                    Err(CallErrorKind::Refused(
                        "cancelled: the caller gave up before the call started".into(),
                    ))
                } else {
                    let r = self.run(&func, head.chain, key, args, &mut out);
                    self.router.node.calls.cancelled.lock().remove(&key);
                    r
                };
                (func, result)
            }
        };
        if let Err(kind) = &result {
            if msg.reply_to == Handle::NONE && !matches!(kind, CallErrorKind::ChainAborted { .. }) {
                log::error!("call to {func} (no reply wanted) failed: {kind}");
            }
        }
        let data = match result {
            Ok(()) => out,
            Err(kind) => postcard::to_stdvec(&ReplyHead::Err(kind)).unwrap_or_default(),
        };
        route_reply(self.router.shared(), &msg, data);
    }
}
