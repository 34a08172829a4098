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
//! [`SPIN_ENV`](crate::SPIN_ENV) microseconds before sleeping, because a
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
