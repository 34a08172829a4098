//! `Context`: a handle on one context of the tree, and calls made through it.

use crate::Router;
use crate::call::{self, ChainId, Function};
use crate::channel::Receiver;
use crate::error::{CallError, CallErrorKind, RecvError};
use crate::ids::{ContextId, Handle};
use crate::message::Message;
use crate::policy::Policy;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A handle on one context (a process this controller started, directly or
/// through others). Cheap to clone; keeps its router alive.
#[derive(Clone)]
pub struct Context {
    router: Router,
    id: ContextId,
    name: Arc<str>,
    info: Option<Arc<crate::transport::bootstrap::BootstrapInfo>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(router: Router, id: ContextId, name: Arc<str>) -> Self {
        Self {
            router,
            id,
            name,
            info: None,
        }
    }

    pub(crate) fn with_info(
        router: Router,
        id: ContextId,
        name: Arc<str>,
        info: Option<Arc<crate::transport::bootstrap::BootstrapInfo>>,
    ) -> Self {
        Self {
            router,
            id,
            name,
            info,
        }
    }

    /// What the bootstrap did when this context was started by a remote
    /// method from this process (cache hit or upload, bytes sent, target
    /// platform); `None` for local contexts and ones started via another.
    pub fn bootstrap_info(&self) -> Option<&crate::transport::bootstrap::BootstrapInfo> {
        self.info.as_deref()
    }

    /// The context's id.
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// The context's name, e.g. `local.3`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The router this handle routes through.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Calls `F` in this context and waits for its result, with no deadline
    /// (it still fails promptly if the context or a hop to it dies).
    ///
    /// # Errors
    /// A [`CallError`] naming this context and `F::NAME`.
    pub fn call<F: Function>(&self, args: &F::Args) -> Result<F::Output, CallError> {
        self.call_async::<F>(args)?.wait()
    }

    /// Like [`Context::call`], failing with [`CallErrorKind::Timeout`] after
    /// `timeout` (the function may still be running remotely).
    ///
    /// # Errors
    /// As [`Context::call`].
    pub fn call_timeout<F: Function>(
        &self,
        args: &F::Args,
        timeout: Duration,
    ) -> Result<F::Output, CallError> {
        self.call_async::<F>(args)?.wait_timeout(timeout)
    }

    /// Starts a call and returns at once; wait on the [`PendingCall`].
    ///
    /// # Errors
    /// Only if the arguments cannot be encoded.
    pub fn call_async<F: Function>(
        &self,
        args: &F::Args,
    ) -> Result<PendingCall<F::Output>, CallError> {
        self.start_call::<F>(args, None)
    }

    /// Sends a call whose result nobody waits for. Failures are logged by the
    /// remote context.
    ///
    /// # Errors
    /// Only if the arguments cannot be encoded.
    pub fn call_no_reply<F: Function>(&self, args: &F::Args) -> Result<(), CallError> {
        let msg = call::request::<F>(self.id, args, None)
            .map_err(|e| self.error(F::NAME, bad_args(e)))?;
        self.router.node.send_stamped(msg);
        Ok(())
    }

    /// A new call chain: pipelined no-reply calls where the first failure
    /// stops the rest (see [`CallChain`]).
    pub fn chain(&self) -> CallChain {
        static NONCE: AtomicU64 = AtomicU64::new(1);
        let nonce = (u64::from(std::process::id()) << 32) | NONCE.fetch_add(1, Ordering::Relaxed);
        CallChain {
            ctx: self.clone(),
            id: (self.router.id().0, nonce),
        }
    }

    /// Sends a message to `handle` in this context (source fields stamped).
    pub fn send(&self, mut msg: Message) {
        msg.dst_id = self.id;
        self.router.node.send_stamped(msg);
    }

    /// Asks the context to shut down (its children go with it). Returns at once.
    pub fn shutdown(&self) {
        self.send(Message::bytes(self.id, Handle::SHUTDOWN, Vec::new()));
    }

    /// Asks the context to shut down and waits until its stream closes.
    /// Returns `false` if it was still connected at the deadline.
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        let rx =
            self.router
                .receiver_for(Policy::Respondent(self.id), Some(self.id), "shutdown wait");
        self.shutdown();
        matches!(
            rx.recv_timeout(timeout),
            Err(RecvError::Dead { .. }) | Err(RecvError::Closed)
        )
    }

    /// Detaches the context: it is no longer killed when this side
    /// disconnects, and it finishes the calls it has queued before exiting.
    ///
    /// # Errors
    /// As [`Context::call`].
    pub fn detach(&self) -> Result<(), CallError> {
        self.call::<crate::builtin::Detach>(&())
    }

    /// Sends an encoded typed `payload` to `handle` in this context with a
    /// reply handle, and returns the call that waits for a reply in the
    /// standard reply format. For request/reply protocols built on the core,
    /// such as `mitogen-service`'s service calls; `what` names the request in
    /// errors. The server answers with [`crate::layer::send_reply`].
    pub fn request<T: serde::de::DeserializeOwned>(
        &self,
        handle: Handle,
        what: impl Into<Cow<'static, str>>,
        payload: Vec<u8>,
    ) -> PendingCall<T> {
        let what = what.into();
        let receiver =
            self.router
                .receiver_for(Policy::Respondent(self.id), Some(self.id), "request");
        let mut msg = Message::bytes(self.id, handle, payload);
        msg.enc = crate::message::Enc::TYPED;
        msg.reply_to = receiver.handle();
        self.router.node.send_stamped(msg);
        PendingCall {
            receiver,
            ctx: self.clone(),
            function: what,
            answered: Default::default(),
            _t: PhantomData,
        }
    }

    fn start_call<F: Function>(
        &self,
        args: &F::Args,
        chain: Option<ChainId>,
    ) -> Result<PendingCall<F::Output>, CallError> {
        let mut msg = call::request::<F>(self.id, args, chain)
            .map_err(|e| self.error(F::NAME, bad_args(e)))?;
        let receiver =
            self.router
                .receiver_for(Policy::Respondent(self.id), Some(self.id), F::NAME);
        msg.reply_to = receiver.handle();
        self.router.node.send_stamped(msg);
        Ok(PendingCall {
            receiver,
            ctx: self.clone(),
            function: Cow::Borrowed(F::NAME),
            answered: Default::default(),
            _t: PhantomData,
        })
    }

    fn error(&self, function: &str, kind: CallErrorKind) -> CallError {
        CallError::new(self, function, kind)
    }
}

fn bad_args(e: crate::message::PayloadError) -> CallErrorKind {
    CallErrorKind::BadArguments(e.to_string())
}

/// A call in flight. Wait on it, or add [`PendingCall::receiver`] to a
/// [`crate::Select`] and hand what arrives to [`PendingCall::finish`].
///
/// Dropping it before the reply came (including when a wait timed out)
/// tells the called context that the caller gave up
/// ([`crate::CallCx::is_cancelled`]; a call still queued there is skipped),
/// and the call keeps counting in [`crate::Router::pending_calls`] until it
/// really ends.
pub struct PendingCall<T> {
    receiver: Receiver,
    ctx: Context,
    function: Cow<'static, str>,
    answered: std::sync::atomic::AtomicBool,
    _t: PhantomData<fn() -> T>,
}

impl<T> Drop for PendingCall<T> {
    fn drop(&mut self) {
        if self.answered.load(Ordering::Relaxed) || !self.receiver.abandon() {
            return;
        }
        if let Ok(msg) = Message::typed(self.ctx.id, Handle::CANCEL_CALL, &self.receiver.handle()) {
            self.ctx.router.node.send_stamped(msg);
        }
    }
}

impl<T> std::fmt::Debug for PendingCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("context", &self.ctx)
            .field("function", &self.function)
            .finish()
    }
}

impl<T: serde::de::DeserializeOwned> PendingCall<T> {
    /// Waits for the result with no deadline.
    ///
    /// # Errors
    /// A [`CallError`].
    pub fn wait(self) -> Result<T, CallError> {
        self.wait_deadline(None)
    }

    /// Waits at most `timeout`.
    ///
    /// # Errors
    /// A [`CallError`], [`CallErrorKind::Timeout`] at the deadline.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, CallError> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Waits until `deadline` (`None`: no deadline).
    ///
    /// # Errors
    /// As [`PendingCall::wait_timeout`].
    pub fn wait_deadline(self, deadline: Option<Instant>) -> Result<T, CallError> {
        let started = Instant::now();
        let r = self.receiver.recv_deadline(deadline);
        if r == Err(RecvError::Timeout) {
            return Err(self
                .ctx
                .error(&self.function, CallErrorKind::Timeout(started.elapsed())));
        }
        self.finish(r)
    }

    /// The receiver the reply arrives on, for use with [`crate::Select`].
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// Turns what the receiver produced into the call's result.
    ///
    /// # Errors
    /// As [`PendingCall::wait`].
    pub fn finish(&self, received: Result<Message, RecvError>) -> Result<T, CallError> {
        if !matches!(received, Err(RecvError::Timeout)) {
            self.answered.store(true, Ordering::Relaxed);
        }
        let kind = match received {
            Ok(msg) => match call::decode_reply(&msg, self.ctx.router.registry()) {
                Ok(v) => return Ok(v),
                Err(kind) => kind,
            },
            Err(RecvError::Dead { reason, .. }) => call::classify_dead(reason),
            Err(RecvError::Timeout) => CallErrorKind::Timeout(Duration::ZERO),
            Err(RecvError::Closed) => {
                CallErrorKind::Disconnected(crate::message::DEAD_SHUTDOWN.into())
            }
        };
        Err(self.ctx.error(&self.function, kind))
    }
}

/// A pipeline of calls to one context (Mitogen's `CallChain`).
///
/// [`CallChain::call_no_reply`] sends without waiting. If one of those calls
/// fails, every later call in the chain fails without running, and the first
/// failure is reported by the next call that waits for a reply
/// ([`CallChain::call`]) as [`CallErrorKind::ChainAborted`]. The failure
/// sticks until [`CallChain::reset`].
#[derive(Debug, Clone)]
pub struct CallChain {
    ctx: Context,
    id: ChainId,
}

impl CallChain {
    /// Sends a call in the chain without waiting.
    ///
    /// # Errors
    /// Only if the arguments cannot be encoded.
    pub fn call_no_reply<F: Function>(&self, args: &F::Args) -> Result<(), CallError> {
        let msg = call::request::<F>(self.ctx.id, args, Some(self.id))
            .map_err(|e| self.ctx.error(F::NAME, bad_args(e)))?;
        self.ctx.router.node.send_stamped(msg);
        Ok(())
    }

    /// Calls `F` in the chain and waits; reports an earlier failure instead.
    ///
    /// # Errors
    /// A [`CallError`].
    pub fn call<F: Function>(&self, args: &F::Args) -> Result<F::Output, CallError> {
        self.call_async::<F>(args)?.wait()
    }

    /// Starts a call in the chain.
    ///
    /// # Errors
    /// Only if the arguments cannot be encoded.
    pub fn call_async<F: Function>(
        &self,
        args: &F::Args,
    ) -> Result<PendingCall<F::Output>, CallError> {
        self.ctx.start_call::<F>(args, Some(self.id))
    }

    /// Forgets a recorded failure so the chain can be used again.
    ///
    /// # Errors
    /// As [`Context::call`].
    pub fn reset(&self) -> Result<(), CallError> {
        self.ctx
            .start_call::<crate::builtin::ForgetChain>(&(), Some(self.id))?
            .wait()
    }
}
