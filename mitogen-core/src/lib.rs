//! mitogen-core: a message router, typed calls and self-replicating agents.
//!
//! A controller process holds a tree of *contexts*: processes it started
//! (here over a socketpair, with `mitogen-ssh` over ssh/sudo/su/doas), each
//! running this same program as an agent. Every context has a router;
//! messages are routed through the tree by context id, checked against the
//! stream they arrived on, and delivered to handlers guarded by policies.
//!
//! ```text
//!   controller (context 0)                 user threads: Context::call, Receiver, Select
//!   ┌──────────────────────────┐             │ route() from any thread; writes go
//!   │ Router ── handlers        │◄────────────┘ straight to the socket unless it is full
//!   │ broker thread (mio)       │
//!   └───┬──────────────────┬───┘
//!       │ socketpair       │ socketpair        frames: 26-byte header + payload
//!   ┌───▼──────────┐   ┌───▼──────────┐
//!   │ local.1      │   │ local.2      │        agents: same binary, `--mitogen-agent`,
//!   │ main: calls  │   │ main: calls  │        calls run in order on the main thread
//!   └───┬──────────┘   └──────────────┘
//!       │ (started by local.1, routed through it)
//!   ┌───▼──────────┐
//!   │ local.3      │   logs from any context ──FORWARD_LOG──► controller's `log`
//!   └──────────────┘
//! ```
//!
//! # Getting started
//!
//! ```no_run
//! use mitogen_core::{CallCx, FnError, Function, Local};
//!
//! /// Returns the agent's process id.
//! struct Pid;
//! impl Function for Pid {
//!     const NAME: &'static str = "demo::pid";
//!     type Args = ();
//!     type Output = u32;
//!     fn call(_cx: &CallCx<'_>, (): ()) -> Result<u32, FnError> {
//!         Ok(std::process::id())
//!     }
//! }
//!
//! fn main() -> Result<(), mitogen_core::Error> {
//!     // Same binary on both ends: started as an agent, this never returns.
//!     let router = mitogen_core::init(|reg| {
//!         reg.add::<Pid>();
//!     })?;
//!     let child = router.connect(&Local::new())?;
//!     let grandchild = router.connect_via(&Local::new(), &child)?;
//!     println!("child {} grandchild {}", child.call::<Pid>(&())?, grandchild.call::<Pid>(&())?);
//!     Ok(())
//! }
//! ```
//!
//! # Logs from every context
//!
//! `log` records made in any context (by your functions or by mitogen
//! itself) are forwarded to the controller and re-emitted through its `log`
//! facade with **their own target** and the message prefixed with the
//! context's name (`[ssh.web1:22] ...`), so `RUST_LOG=myapp=info` shows your
//! remote records as it shows local ones. Agents filter at the controller's
//! `log::max_level()`, which they follow while the program runs (raise it
//! after connecting and the agents raise theirs). What an agent process
//! writes to stderr arrives as info records with target `mitogen::stderr`.
//! Call [`init`] first in `main`, then install your logger: `init` turns the
//! process into an agent when it was started as one, and in an agent it
//! installs the forwarding logger (a logger installed before it would be
//! used in agents too, and their records would only reach you as stderr
//! lines).
//!
//! Your functions' argument and result types need `serde`'s `Serialize`
//! and `Deserialize` (`serde = { version = "1", features = ["derive"] }`).
//!
//! # What is where
//! For applications:
//! - [`Message`] and the IO-free [`message::codec`]: the wire format (Python Mitogen's header).
//! - [`Router`] (`api.rs`): connections ([`Local`], [`Method`]), contexts,
//!   receivers, [`Policy`], shutdown.
//! - [`Context`] (`context.rs`): calls ([`Context::call`], [`PendingCall`],
//!   [`CallChain`]), shutdown.
//! - Errors: [`CallError`] (with [`CallErrorKind`]), [`ConnectError`], and
//!   [`RemoteError`] / [`ErrorType`] for errors that keep their type across hops.
//! - [`Receiver`], [`Sender`], [`Select`], [`Latch`] (`channel.rs`): waiting,
//!   always with optional deadlines.
//! - [`Function`], [`Registry`] (`call.rs`, built-ins in `builtin.rs`): what
//!   can be called by name, and how calls are run.
//! - [`manual`]: the security model, threads and lifecycle, in prose.
//!
//! For layers built on the core (services, connection methods, runners):
//! - [`layer`] (`layer.rs`): the [`layer::LayerRouter`] methods an
//!   application does not need (handlers on fixed handles, raw routing,
//!   timers, per-router state, flow control), reply helpers, process facts.
//! - [`transport`]: the bootstrap every connection method shares;
//!   [`transport::bootstrap`]: how agents get onto targets that have only `sh`.
//! - [`limits`]: the sizes that bound memory and shape the wire.
//!
//! Inside, from the wire up (each sans-IO part is fuzzed and driven by
//! `mitogen_test_support::Mesh` under a virtual clock):
//! - [`stream_core`] (sans-IO): the stream protocol: bytes in, whole
//!   messages out (reassembly, the reverse-path pre-check); messages in,
//!   fragments out by lane; backpressure marks; dead replies for closed and
//!   stalled streams.
//! - [`machine`] (sans-IO): the router core: routes, handlers, policies,
//!   route announcements and stream loss.
//! - `stream.rs`: a stream's writer (fd, lock, the direct-write fast path,
//!   waits for room); `router.rs`: `Shared`, what drives the router core
//!   (carries out its actions, backpressure on receivers); `cmd.rs`: what
//!   threads hand the broker; `broker.rs`: the mio thread (reads into each
//!   stream's `Inbound`, flushes writers, timers, reaping).
//! - `api.rs`'s `Node`: a context's state, each part owned by the module
//!   that uses it (registry, id allocation in `ids_alloc.rs`, call state,
//!   log level in `logfwd.rs`, extensions); `agent.rs`: the agent process;
//!   `diag.rs`: the periodic dump (set `MITOGEN_RS_DUMP=SECONDS`, see
//!   [`layer::DUMP_ENV`]).
//!
//! # Dependencies
//! `mio` (the poll loop), `bytes` (zero-copy payload slices), `serde` +
//! `postcard` (typed payloads: a small, specified wire format), `parking_lot`
//! (small, fast locks), `crossbeam-channel` (receivers and select with
//! deadlines), `log` (the facade forwarded logs arrive in), `rustix` (safe
//! syscalls: poll, dup, kill, uname), `thiserror` (error types), `uzers`
//! (user accounts through libc's `getpw*_r`, so NSS users count too, where
//! reading `/etc/passwd` would miss them), `fastrand` (unique temp names).
#![doc(test(attr(deny(warnings))))]

mod agent;
mod api;
mod blob;
mod broker;
mod builtin;
mod call;
mod channel;
mod cmd;
mod context;
mod diag;
mod error;
mod ids;
mod ids_alloc;
pub mod layer;
mod logfwd;
pub mod machine;
pub mod manual;
pub mod message;
mod policy;
mod remote_error;
mod router;
mod spin;
mod stream;
pub mod stream_core;
mod sys;
pub mod transport;

#[doc(hidden)]
pub mod fuzzing;

/// The sizes that bound memory and shape the wire (see
/// [`manual`]'s "Backpressure" section).
pub mod limits {
    pub use crate::router::{RECV_HIGH_WATER, RECV_LOW_WATER};
    pub use crate::stream_core::{ALONE_MAX, FRAGMENT, HIGH_WATER, LOW_WATER};
}

pub use agent::{agent_main, is_agent};
pub use api::{Method, Router, RouterOptions};
pub use blob::Blob;
pub use call::{CallCx, FnError, Function, Registry};
pub use channel::{Latch, Receiver, Select, SendError, Sender};
pub use context::{CallChain, Context, PendingCall};
pub use error::{CallError, CallErrorKind, ConnectError, Error, RecvError};
pub use ids::{ContextId, Handle};
pub use logfwd::log_to_stderr_from_env;
pub use message::{Message, PayloadError};
pub use policy::Policy;
pub use remote_error::{ErrorType, RemoteError, error_chain, find_source};
pub use router::Stalled;
pub use transport::local::Local;

/// The protocol version agents and controllers compare when they meet.
pub const PROTOCOL_VERSION: &str = "mitogen-rs/1";

/// Starts this program's context.
///
/// If the process was started as an agent (by a parent's [`Router::connect`])
/// this runs the agent and never returns. Otherwise it starts a controller
/// router and returns it. `register` must add the same functions in both
/// roles: put it in one function and pass that.
///
/// # Errors
/// [`Error::Start`] if the broker thread cannot start.
pub fn init(register: impl Fn(&mut Registry)) -> Result<Router, Error> {
    init_with(RouterOptions::default(), register)
}

/// [`init`] with options for the controller's router.
///
/// # Errors
/// As [`init`].
pub fn init_with(
    options: RouterOptions,
    register: impl Fn(&mut Registry),
) -> Result<Router, Error> {
    agent_main(&register);
    // Many targets mean many descriptors; best effort.
    let _ = sys::raise_nofile_limit();
    Router::new(options, Registry::new(register))
}
