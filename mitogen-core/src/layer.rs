//! For crates that build on mitogen-core: connection methods, service
//! layers, runners. An application calling functions in contexts needs
//! none of this.
//!
//! - Router methods only a layer needs, behind [`LayerRouter`] (bring it
//!   into scope with `use mitogen_core::layer::LayerRouter`): handlers on
//!   fixed handles, raw routing (which can forge sources), timers on the
//!   broker thread, per-router state ([`LayerRouter::extension`]), flow
//!   control on a link ([`LayerRouter::pending_bytes`],
//!   [`LayerRouter::when_drained`]), weak router handles.
//! - Answering requests in the standard reply format: [`send_reply`],
//!   [`send_encoded_reply`] (with `Context::request` on the asking side);
//!   [`panic_message`] for a caught panic, as calls report it.
//! - Further policies after the router's: [`Source`] (what a handler gets)
//!   and [`Trust`] ([`LayerRouter::trust`]), for [`crate::Policy::allows`].
//! - Facts about the process a layer reports: [`host_name`], [`user_name`];
//!   accounts from the system's user database (NSS): [`user_by_name`],
//!   [`user_by_uid`];
//!   [`raise_nofile_limit`] for layers that open many connections.
//! - A per-user directory for what a layer works out once per controller:
//!   [`controller_cache_dir`].
//! - Environment variables agents honour: [`DUMP_ENV`], [`SPIN_ENV`].
//! - The wire: [`crate::message`] (payload encodings, the codec),
//!   [`crate::machine`] (the routing state machine), [`crate::limits`].

pub use crate::call::{panic_message, send_encoded_reply, send_reply};
pub use crate::diag::DUMP_ENV;
pub use crate::policy::{Source, Trust};
pub use crate::spin::SPIN_ENV;
pub use crate::sys::{
    UserEntry, host_name, raise_nofile_limit, user_by_name, user_by_uid, user_name,
};
pub use crate::transport::agent_image::controller_cache_dir;

use crate::Router;
use crate::cmd::Cmd;
use crate::ids::{ContextId, Handle};
use crate::message::Message;
use crate::policy::Policy;
use crate::router::{HandlerEntry, Sink};
use std::any::TypeId;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod sealed {
    // The sealed-trait pattern: a nameable `Sealed` could be implemented
    // outside this crate.
    #[allow(unnameable_types)]
    pub trait Sealed {}
    impl Sealed for crate::Router {}
}

/// The [`Router`] methods for layers built on mitogen-core (services,
/// connection methods, runners), kept off the application's `Router` so
/// that an application author sees only what applications use. Sealed:
/// only `Router` implements it.
pub trait LayerRouter: sealed::Sealed {
    /// Installs a handler function on a fixed `handle` (for higher layers,
    /// e.g. services). It runs on whatever thread routes the message, usually
    /// the broker: it must not block. Replaces any handler on that handle.
    ///
    /// It gets the message and the [`Source`] the router verified it came
    /// from, for layers that apply further policies after the router's
    /// (`policy.allows(&msg, &source, &router.trust())`).
    fn add_handler(
        &self,
        handle: Handle,
        policy: Policy,
        f: impl Fn(Message, &Source) + Send + Sync + 'static,
    );

    /// Runs `f` on the broker thread once `after` has passed. Like handlers,
    /// it must not block. Timers still pending at shutdown are dropped.
    fn schedule(&self, after: Duration, f: impl FnOnce() + Send + 'static);

    /// A fresh dynamic handle, for [`LayerRouter::add_handler`].
    fn new_handle(&self) -> Handle;

    /// Per-router state of a higher layer, created by `init` on first use
    /// (one value per type; `init` must not call `extension`). Dropped when
    /// the router is.
    fn extension<T: Send + Sync + 'static>(&self, init: impl FnOnce() -> T) -> Arc<T>;

    /// A handle that does not keep the tree alive: for threads of higher
    /// layers that must not stop a controller from shutting down when the
    /// user drops the last handle. It works until the router shuts down.
    fn downgrade(&self) -> Router;

    /// Removes the handler on `handle`.
    fn remove_handler(&self, handle: Handle);

    /// Routes `msg` exactly as given, source fields included.
    ///
    /// Receivers downstream verify the source, so a forged `src_id` or
    /// `auth_id` is dropped by the next router (tests use this).
    fn route(&self, msg: Message);

    /// Routes `msg` from this context (sets `src_id` and `auth_id`).
    fn send_stamped(&self, msg: Message);

    /// Bytes queued in this process on the stream that leads to `ctx`, or
    /// `None` when there is no such stream. Flow control builds on this.
    fn pending_bytes(&self, ctx: ContextId) -> Option<usize>;

    /// Runs `f` once the stream that leads to `ctx` has at most `below` bytes
    /// queued (at once if it already has, or if there is no such stream),
    /// or when that stream closes: how flow control waits for a link to
    /// drain without polling. `f` runs on the thread that drains the stream
    /// (usually the broker) with the stream locked: it must be quick and
    /// must not send or block (notify a condition variable, say).
    fn when_drained(&self, ctx: ContextId, below: usize, f: impl FnOnce() + Send + 'static);

    /// What this context trusts (itself and its ancestors), for
    /// [`Policy::allows`].
    fn trust(&self) -> Trust<'_>;

    /// Bytes sent and received so far on the stream that leads to `ctx`
    /// (frames and headers included), or `None` without such a stream.
    fn stream_bytes(&self, ctx: ContextId) -> Option<(u64, u64)>;
}

impl LayerRouter for Router {
    fn add_handler(
        &self,
        handle: Handle,
        policy: Policy,
        f: impl Fn(Message, &Source) + Send + Sync + 'static,
    ) {
        self.shared().add_handler(
            handle,
            HandlerEntry {
                policy,
                sink: Sink::Fn(Arc::new(move |m, _, src| f(m, src))),
                persist: true,
                respondent: None,
                label: "handler",
                since: Instant::now(),
            },
        );
    }

    fn schedule(&self, after: Duration, f: impl FnOnce() + Send + 'static) {
        self.shared()
            .broker_cmd(Cmd::Timer(Instant::now() + after, Box::new(f)));
    }

    fn new_handle(&self) -> Handle {
        self.shared().alloc_handle()
    }

    fn extension<T: Send + Sync + 'static>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let id = TypeId::of::<T>();
        let mut ext = self.node.extensions.lock();
        if let Some(t) = ext
            .get(&id)
            .and_then(|any| any.clone().downcast::<T>().ok())
        {
            return t;
        }
        // `init` runs under the lock: it must not call `extension` itself.
        let t = Arc::new(init());
        ext.insert(id, t.clone());
        t
    }

    fn downgrade(&self) -> Self {
        Self::borrowed(self.node.clone())
    }

    fn remove_handler(&self, handle: Handle) {
        self.shared().remove_handler(handle);
    }

    fn route(&self, msg: Message) {
        self.shared().route(msg);
    }

    fn send_stamped(&self, msg: Message) {
        self.node.send_stamped(msg);
    }

    fn pending_bytes(&self, ctx: ContextId) -> Option<usize> {
        self.shared()
            .stream_by_context(ctx)
            .map(|s| s.pending_bytes())
    }

    fn when_drained(&self, ctx: ContextId, below: usize, f: impl FnOnce() + Send + 'static) {
        match self.shared().stream_by_context(ctx) {
            Some(s) => s.when_drained(below, Box::new(f)),
            None => f(),
        }
    }

    fn trust(&self) -> Trust<'_> {
        Trust {
            me: self.id(),
            ancestors: &self.shared().id.ancestors,
        }
    }

    fn stream_bytes(&self, ctx: ContextId) -> Option<(u64, u64)> {
        self.shared().stream_by_context(ctx).map(|s| {
            (
                s.tx_bytes.load(Ordering::Relaxed),
                s.rx_bytes.load(Ordering::Relaxed),
            )
        })
    }
}
