//! The manual: how mitogen-rs works and what it trusts. Prose only.
//!
//! # Security model
//!
//! **Who can make a context do something.** Every message carries `src_id`
//! (who sent it) and `auth_id` (whose authority it acts under). A router
//! accepts a message from a stream only if that stream is the way back to
//! both ids: a child cannot claim to be its parent, a sibling or the
//! controller, because the parent's router knows which stream each id lives
//! behind (routes are learned from ADD_ROUTE messages that only a direct
//! child may send, and only for ids behind itself). Forged messages are
//! dropped and logged; tests forge both fields.
//!
//! Handlers then apply a [`Policy`](crate::Policy). Function calls
//! (CALL_FUNCTION), shutdown and service activation require *parent
//! authority*: the message must act under this context or one of its
//! ancestors. So the controller can call anything anywhere, an agent can
//! call functions in the contexts it started, and a child can never call
//! into its parent or a sibling. Refusals come back as a dead reply saying
//! "refused by policy" ([`CallErrorKind::Refused`](crate::CallErrorKind::Refused)).
//!
//! **Unidirectional mode** ([`RouterOptions::unidirectional`](crate::RouterOptions::unidirectional))
//! stops routers from forwarding between two children at all, so a
//! compromised target cannot even reach another target's services; it is
//! inherited by every context below.
//!
//! **What a compromised target can do.** It can send anything to its parent
//! under its own id: replies to calls made to it, log records, requests to
//! services whose method policy admits it (`Policy::Any` methods, such as
//! `mitogen-service`'s file fetch, which serves only files the parent
//! registered), and garbage. Garbage closes its own stream (the codec never
//! panics on input; `max_message_size` bounds allocations). It cannot run
//! code in its parent.
//!
//! **The agent cache on targets.** The first stage only runs a cached agent
//! from a directory owned by the login user, and only after the agent has
//! hashed its own image (SHA-256 of `/proc/self/exe`) and the result is the
//! hash the controller announced. That check runs on every start and after
//! every upload, on every target (no hash tool is needed); an agent that
//! fails it is treated as a miss and uploaded again
//! ([`transport::bootstrap`](crate::transport::bootstrap) says what is
//! checked when). A user who can write that directory can already run code
//! as that user.
//!
//! **Passwords** are written to the program's terminal only after it has
//! turned echo off, and never logged. They travel inside method options:
//! a `via` hop receives the options of the next hop (the intermediary must
//! be trusted with them, as it runs the next program).
//!
//! # Threads
//!
//! Each context has one IO thread (`mitogen-broker`) that reads, routes and
//! flushes. Any thread may route and write: a write goes straight to the
//! socket under a per-stream lock and is queued for the IO thread only when
//! the socket is full. Functions called in an agent run on its main thread,
//! one at a time, in arrival order; services run on a pool of workers
//! (`mitogen-svc-N`). After a small message, threads poll for up to
//! [`SPIN_ENV`](crate::layer::SPIN_ENV) microseconds before sleeping, because a
//! wake-up across CPUs costs tens of microseconds on virtual machines.
//!
//! # Lifecycle
//!
//! A context exits when its parent's stream closes (the parent exited, was
//! killed, or shut it down), after closing its own children's streams and
//! reaping them, so a tree unwinds from any point. A detached context
//! ([`Context::detach`](crate::Context::detach)) instead finishes the calls
//! it has queued and then exits. Every call waiting on a context that
//! disappears, or on anything behind it, fails at once with
//! [`CallErrorKind::Disconnected`](crate::CallErrorKind::Disconnected).
//! Calling a context that is already gone fails the same way, naming it:
//! every router remembers the contexts it has seen disappear.
//!
//! # Long calls, and giving up on one
//!
//! Calls to one context run one at a time, so a call that takes 5 s delays
//! every later call to that context by 5 s. When a caller gives up (its
//! [`call_timeout`](crate::Context::call_timeout) deadline passes, or it
//! drops the [`PendingCall`](crate::PendingCall)), the called context is
//! told: a call still queued there is skipped, and a running one sees
//! [`CallCx::is_cancelled`](crate::CallCx::is_cancelled) turn true and
//! should return early. Until the call really ends,
//! [`Router::pending_calls`](crate::Router::pending_calls) still counts it.
//!
//! For work that must not hold up the context, use one of:
//! - a thread in the function that does the work and streams progress and
//!   the result to a [`Sender`](crate::Sender) the caller passed in, while
//!   the function itself returns at once;
//! - a separate child context for the long work (`connect_via(&Local::new(),
//!   &ctx)`): each context has its own main thread;
//! - services (`mitogen-service`), which run on a worker pool.
//!
//! # Errors across hops
//!
//! A function's error crosses the wire as a
//! [`RemoteError`](crate::RemoteError): its text, each source's text, and,
//! if the error or any of its sources is of a type registered with
//! [`Registry::add_error`](crate::Registry::add_error) (an
//! [`ErrorType`](crate::ErrorType) with a unique code), that value itself.
//! The receiving side decodes it with its own registry, so
//! [`CallError::downcast_ref`](crate::CallError::downcast_ref) and
//! [`ConnectError::downcast_ref`](crate::ConnectError::downcast_ref) find it
//! after any number of hops; a function that fails with an error it got
//! from onward passes the typed value on. Layers define their kinds this
//! way (`mitogen_ssh::AuthError`, `mitogen_service::ServiceError`), so core
//! has no kinds of theirs. [`CallErrorKind`](crate::CallErrorKind) itself
//! separates where a call failed: the function (`Failed`, `Panicked`,
//! `BadArguments`), the way there (`Disconnected`, `Refused`, `TooLarge`),
//! or the caller's patience (`Timeout`).
//! [`error_chain`](crate::error_chain) prints any error with its causes.
//!
//! # Backpressure
//!
//! Every queue is bounded, and a full one pushes back on whatever feeds it
//! instead of growing:
//! - **Streams**: a stream whose outbound queue is over
//!   [`HIGH_WATER`](crate::limits::HIGH_WATER) makes threads that send to
//!   it wait (with a deadline; [`Sender::send_deadline`](crate::Sender::send_deadline)
//!   reports [`Stalled`](crate::Stalled)), and makes the broker stop reading
//!   the streams whose messages it forwarded there, until the queue is back
//!   under [`LOW_WATER`](crate::limits::LOW_WATER). The broker itself never
//!   waits.
//! - **Receivers**: a receiver whose queue holds more than
//!   [`RECV_HIGH_WATER`](crate::limits::RECV_HIGH_WATER) stops the stream
//!   it is fed from until the consumer has taken it under
//!   [`RECV_LOW_WATER`](crate::limits::RECV_LOW_WATER). Drain the receivers
//!   you open: waiting for a call's reply while a receiver fed by the same
//!   stream is full waits until that receiver is drained.
//! - **Large messages** are split on the wire into frames of at most
//!   [`FRAGMENT`](crate::limits::FRAGMENT) bytes, each with the full 26-byte
//!   header and `Enc::MORE` on all but the last; only the destination
//!   reassembles them, so an intermediary holds at most a high-water mark's
//!   worth per stream, and a small call never waits behind more than one
//!   fragment of each bulk transfer on a link.
//!
//! Why stop-reading rather than per-hop credits: it needs no new messages,
//! works with the Python Mitogen framing, and keeps the direct-write fast
//! path. The price is head-of-line blocking within one stream: messages
//! behind a paused stream's backlog wait with it (other streams keep
//! flowing).
