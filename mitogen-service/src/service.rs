//! Named services with per-method policies, served by a worker pool.
//!
//! ```text
//! caller: ctx.call_service::<M>(&args) ──CALL_SERVICE(service, method, args)──► context
//!   broker thread: hands the message to the pool (never runs service code)
//!   worker: unknown service? ─► UnknownService    unknown method? ─► UnknownMethod
//!           not active and caller lacks parent authority? ─► PolicyRefused (activation)
//!           method policy refuses? ─► PolicyRefused    args don't decode? ─► BadArguments
//!           M::call(&service, cx, args) ─► reply (Ok, Failed, or Panicked)
//! ```

use mitogen_core::layer::LayerRouter;
use mitogen_core::layer::{Source, send_encoded_reply};
use mitogen_core::{
    CallError, CallErrorKind, Context, FnError, Handle, Message, PendingCall, Policy, Registry,
    RemoteError, Router,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::any::Any;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// A named service: one instance per context, created on first use.
pub trait Service: Send + Sync + Sized + 'static {
    /// The name callers address it by.
    const NAME: &'static str;
    /// Creates the instance in the context where it is first called.
    ///
    /// # Errors
    /// Whatever prevents it; the first caller gets it as `Failed`.
    fn activate(router: &Router) -> Result<Self, FnError>;

    /// Who may cause activation (default: parent authority). A service that
    /// does nothing until its owner configures it, like the file service,
    /// may allow any caller.
    fn activation_policy() -> Policy {
        Policy::ParentAuthority
    }
}

/// One method of a [`Service`].
///
/// ```
/// use mitogen_service::{Service, ServiceMethod, ServiceCx};
/// use mitogen_core::{FnError, Policy, Router};
///
/// /// Counts things, per context.
/// pub struct Counter(std::sync::atomic::AtomicU64);
/// impl Service for Counter {
///     const NAME: &'static str = "example.counter";
///     fn activate(_: &Router) -> Result<Self, FnError> {
///         Ok(Counter(0.into()))
///     }
/// }
///
/// /// Adds to the counter; any context may call it.
/// pub struct Add;
/// impl ServiceMethod for Add {
///     type Service = Counter;
///     const NAME: &'static str = "add";
///     type Args = u64;
///     type Output = u64;
///     fn policy() -> Policy {
///         Policy::Any
///     }
///     fn call(c: &Counter, _cx: &ServiceCx<'_>, n: u64) -> Result<u64, FnError> {
///         Ok(c.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n)
///     }
/// }
///
/// let _registry = mitogen_core::Registry::new(|reg| {
///     mitogen_service::register_with(reg, |s| {
///         s.add::<Add>();
///     });
/// });
/// ```
pub trait ServiceMethod: 'static {
    /// The service it belongs to.
    type Service: Service;
    /// The method's name.
    const NAME: &'static str;
    /// Its arguments.
    type Args: Serialize + DeserializeOwned;
    /// Its result.
    type Output: Serialize + DeserializeOwned;
    /// Who may call it; the default is parent authority.
    fn policy() -> Policy {
        Policy::ParentAuthority
    }
    /// Runs on a worker thread of the serving context.
    ///
    /// # Errors
    /// Whatever the method decides; the caller sees a `CallError`.
    fn call(
        service: &Self::Service,
        cx: &ServiceCx<'_>,
        args: Self::Args,
    ) -> Result<Self::Output, FnError>;
}

/// What a running service method knows about its call.
#[derive(Debug)]
pub struct ServiceCx<'a> {
    router: &'a Router,
    msg: &'a Message,
}

impl ServiceCx<'_> {
    /// The router of the serving context.
    pub fn router(&self) -> &Router {
        self.router
    }

    /// The calling context.
    pub fn caller(&self) -> mitogen_core::ContextId {
        self.msg.src_id
    }
}

type Instance = Arc<dyn Any + Send + Sync>;
type Activate = Box<dyn Fn(&Router) -> Result<Instance, FnError> + Send + Sync>;
type Thunk =
    Box<dyn Fn(&dyn Any, &ServiceCx<'_>, &[u8]) -> Result<Vec<u8>, CallErrorKind> + Send + Sync>;

struct MethodEntry {
    policy: Policy,
    thunk: Thunk,
}

struct ServiceEntry {
    activate: Activate,
    activation_policy: Policy,
    methods: HashMap<&'static str, MethodEntry>,
}

/// The services a program registers (same on both ends).
pub struct Services {
    services: HashMap<&'static str, ServiceEntry>,
    workers: usize,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Services {
    fn new() -> Self {
        Self {
            services: HashMap::new(),
            workers: 4,
        }
    }

    /// Registers method `M` (and its service).
    pub fn add<M: ServiceMethod>(&mut self) -> &mut Self {
        let entry = self
            .services
            .entry(M::Service::NAME)
            .or_insert_with(|| ServiceEntry {
                activate: Box::new(|r| Ok(Arc::new(M::Service::activate(r)?) as Instance)),
                activation_policy: M::Service::activation_policy(),
                methods: HashMap::new(),
            });
        let thunk: Thunk = Box::new(|svc, cx, args| {
            let svc = svc
                .downcast_ref::<M::Service>()
                .ok_or_else(|| CallErrorKind::failed("service instance of the wrong type"))?;
            let args: M::Args = postcard::from_bytes(args)
                .map_err(|e| CallErrorKind::BadArguments(e.to_string()))?;
            let out = M::call(svc, cx, args).map_err(|e| {
                // A refusal raised inside a method keeps its kind.
                match e.downcast::<crate::file::KindError>() {
                    Ok(k) => k.0,
                    Err(e) => {
                        CallErrorKind::Failed(RemoteError::capture(&*e, cx.router.registry()))
                    }
                }
            })?;
            mitogen_core::message::encode_payload(&out)
                .map_err(|e| CallErrorKind::BadResult(e.to_string()))
        });
        entry.methods.insert(
            M::NAME,
            MethodEntry {
                policy: M::policy(),
                thunk,
            },
        );
        self
    }

    /// Worker threads per context (default 4), started on the first call.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = n.max(1);
        self
    }
}

/// An error and its sources, each once: many errors (core's among them)
/// also print their source in their own message, and repeating it would
/// name one OS error twice.
/// Why the service layer refused a call before any method ran. It reaches
/// the caller typed, after any number of hops:
/// `call_error.downcast_ref::<ServiceError>()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No service of this name is registered in that context.
    #[error("no service named {0:?} is registered there")]
    UnknownService(String),
    /// The service has no method of this name.
    #[error("the service has no method {0:?}")]
    UnknownMethod(String),
    /// The method's (or service activation's) policy refused the caller.
    #[error("refused by policy: {0}")]
    PolicyRefused(String),
}

impl mitogen_core::ErrorType for ServiceError {
    const CODE: &'static str = "mitogen-service/refused";
}

impl ServiceError {
    /// As a call error kind ([`CallErrorKind::Failed`] carrying this value).
    pub fn kind(self) -> CallErrorKind {
        CallErrorKind::Failed(RemoteError::typed(self))
    }
}

/// Registers this crate's built-in services and functions (files, push)
/// and the service dispatcher; call it in the registration function passed
/// to `mitogen_core::init`, on both ends.
pub fn register(reg: &mut Registry) {
    register_with(reg, |_| {});
}

/// [`register`] plus the program's own services.
pub fn register_with(reg: &mut Registry, build: impl FnOnce(&mut Services)) {
    reg.add_error::<ServiceError>();
    let mut services = Services::new();
    crate::file::register_builtin(&mut services);
    build(&mut services);
    let services = Arc::new(services);
    reg.on_start("mitogen-service", move |router| {
        install(router, services.clone())
    });
}

/// Per-context state: active instances.
struct Runtime {
    services: Arc<Services>,
    instances: Mutex<HashMap<&'static str, Instance>>,
}

/// Installs the CALL_SERVICE handler; workers start on the first message.
fn install(router: &Router, services: Arc<Services>) {
    let runtime = Arc::new(Runtime {
        services,
        instances: Mutex::new(HashMap::new()),
    });
    let held = runtime.clone();
    router.extension::<Option<Arc<Runtime>>>(move || Some(held));
    let pool: Mutex<Option<crossbeam_channel::Sender<(Message, Source)>>> = Mutex::new(None);
    // Workers hold a handle that does not keep a controller's tree alive.
    let weak_router = router.downgrade();
    let rt = runtime;
    router.add_handler(Handle::CALL_SERVICE, Policy::Any, move |msg, src| {
        let mut pool = pool.lock();
        let tx = pool.get_or_insert_with(|| start_pool(&rt, weak_router.clone()));
        let _ = tx.send((msg, *src));
    });
}

fn start_pool(rt: &Arc<Runtime>, router: Router) -> crossbeam_channel::Sender<(Message, Source)> {
    let (tx, rx) = crossbeam_channel::unbounded::<(Message, Source)>();
    for i in 0..rt.services.workers {
        let rx = rx.clone();
        let rt = rt.clone();
        let router = router.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mitogen-svc-{i}"))
            .spawn(move || {
                while let Ok((msg, src)) = rx.recv() {
                    dispatch(&rt, &router, &msg, &src);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start service worker: {e}");
        }
    }
    tx
}

#[derive(Serialize, Deserialize)]
struct Head<'a> {
    service: &'a str,
    method: &'a str,
}

fn dispatch(rt: &Runtime, router: &Router, msg: &Message, src: &Source) {
    let result = dispatch_inner(rt, router, msg, src);
    if let Err(e) = send_encoded_reply(router, msg, result.as_deref().map_err(Clone::clone)) {
        log::error!("cannot send service reply: {e}");
    }
}

/// Whether `policy` admits `msg`, which the router verified came from `src`
/// (a message from this context itself always is).
fn admits(router: &Router, policy: &Policy, msg: &Message, src: &Source) -> bool {
    msg.src_id == router.id() || policy.allows(msg, src, &router.trust())
}

fn dispatch_inner(
    rt: &Runtime,
    router: &Router,
    msg: &Message,
    src: &Source,
) -> Result<Vec<u8>, CallErrorKind> {
    let (head, args): (Head<'_>, &[u8]) = postcard::take_from_bytes(&msg.data)
        .map_err(|e| CallErrorKind::BadArguments(e.to_string()))?;
    let entry = rt
        .services
        .services
        .get(head.service)
        .ok_or_else(|| ServiceError::UnknownService(head.service.into()).kind())?;
    let method = entry
        .methods
        .get(head.method)
        .ok_or_else(|| ServiceError::UnknownMethod(head.method.into()).kind())?;
    let instance = {
        let existing = rt.instances.lock().get(head.service).cloned();
        match existing {
            Some(i) => i,
            None => {
                if !admits(router, &entry.activation_policy, msg, src) {
                    return Err(ServiceError::PolicyRefused(format!(
                        "service {} is not active, and this caller may not activate it (needs {:?})",
                        head.service, entry.activation_policy
                    ))
                    .kind());
                }
                let i = (entry.activate)(router).map_err(|e| {
                    CallErrorKind::Failed(RemoteError::capture(&*e, router.registry()))
                })?;
                let mut instances = rt.instances.lock();
                instances
                    .entry(entry_name(rt, head.service))
                    .or_insert(i)
                    .clone()
            }
        }
    };
    if !admits(router, &method.policy, msg, src) {
        return Err(ServiceError::PolicyRefused(format!(
            "{}.{} does not accept calls from context {}",
            head.service, head.method, msg.src_id
        ))
        .kind());
    }
    let cx = ServiceCx { router, msg };
    match catch_unwind(AssertUnwindSafe(|| (method.thunk)(&*instance, &cx, args))) {
        Ok(r) => r,
        Err(p) => Err(CallErrorKind::Panicked(mitogen_core::layer::panic_message(
            &*p,
        ))),
    }
}

fn entry_name(rt: &Runtime, name: &str) -> &'static str {
    rt.services
        .services
        .get_key_value(name)
        .map_or("", |(k, _)| k)
}

/// The instance of service `S` in this process's context, activating it if
/// needed (for registering files with the local `FileService`, say).
///
/// # Errors
/// `Failed` if the service is not registered or cannot activate.
pub fn local_instance<S: Service>(router: &Router) -> Result<Arc<S>, CallErrorKind> {
    let rt = router
        .extension::<Option<Arc<Runtime>>>(|| None)
        .as_ref()
        .clone()
        .ok_or_else(|| {
            CallErrorKind::failed("mitogen-service is not registered in this program")
        })?;
    let entry = rt
        .services
        .services
        .get(S::NAME)
        .ok_or_else(|| ServiceError::UnknownService(S::NAME.into()).kind())?;
    let mut instances = rt.instances.lock();
    let inst = match instances.get(S::NAME) {
        Some(i) => i.clone(),
        None => {
            let i = (entry.activate)(router)
                .map_err(|e| CallErrorKind::Failed(RemoteError::capture(&*e, router.registry())))?;
            instances.insert(entry_name(&rt, S::NAME), i.clone());
            i
        }
    };
    inst.downcast::<S>()
        .map_err(|_| CallErrorKind::failed("service instance of the wrong type"))
}

/// Calling services in a context.
pub trait ServiceExt {
    /// Calls method `M` of its service in this context and waits.
    ///
    /// # Errors
    /// A [`CallError`]: `UnknownService`, `UnknownMethod`, `PolicyRefused`,
    /// `BadArguments`, `Failed`, `Panicked`, or a disconnect.
    fn call_service<M: ServiceMethod>(&self, args: &M::Args) -> Result<M::Output, CallError>;

    /// Starts a call of method `M` and returns at once.
    ///
    /// # Errors
    /// Only if the arguments cannot be encoded.
    fn call_service_async<M: ServiceMethod>(
        &self,
        args: &M::Args,
    ) -> Result<PendingCall<M::Output>, CallError>;
}

impl ServiceExt for Context {
    fn call_service<M: ServiceMethod>(&self, args: &M::Args) -> Result<M::Output, CallError> {
        self.call_service_async::<M>(args)?.wait()
    }

    fn call_service_async<M: ServiceMethod>(
        &self,
        args: &M::Args,
    ) -> Result<PendingCall<M::Output>, CallError> {
        let what = format!("{}.{}", M::Service::NAME, M::NAME);
        let head = Head {
            service: M::Service::NAME,
            method: M::NAME,
        };
        let payload = postcard::to_stdvec(&head)
            .and_then(|h| postcard::to_extend(args, h))
            .map_err(|e| CallError {
                context: self.id(),
                context_name: self.name().to_owned(),
                function: what.clone(),
                kind: CallErrorKind::BadArguments(e.to_string()),
            })?;
        Ok(self.request(Handle::CALL_SERVICE, what, payload))
    }
}
