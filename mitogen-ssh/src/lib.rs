//! mitogen-ssh: connection methods that wrap an external program.
//!
//! Each method is a [`mitogen_core::Method`]: it starts a program (the
//! system `ssh`, `sudo`, `su`, `doas`, or any exec prefix) whose stdin and
//! stdout end up connected to `sh` on the target, answers its password
//! prompts on a PTY when given a password, and hands over to the core's
//! bootstrap, which ships this program's own binary to the target (cached
//! there by content hash) and starts it as an agent.
//!
//! ```text
//! controller ──ssh (socketpair; PTY only for prompts)──► web1: sh stage 0/1 ──exec──► agent
//!                                                            │
//!                              connect_via(Sudo, web1) ──────┘ sudo -u root -- sh ... ──► agent (root)
//! ```
//!
//! Methods started *through* a context run in that context (the
//! intermediary starts the next hop itself), so register them on both ends:
//!
//! ```no_run
//! use mitogen_ssh::{Ssh, Sudo};
//! # fn main() -> Result<(), mitogen_core::Error> {
//! let router = mitogen_core::init(|reg| {
//!     mitogen_ssh::register(reg);
//! })?;
//! let web = router.connect(&Ssh::new("deploy@web1.example.com"))?;
//! let db = router.connect_via(&Ssh::new("db.internal"), &web)?;      // only reachable from web1
//! let root = router.connect_via(&Sudo::new("root"), &db)?;
//! # Ok(()) }
//! ```
//!
//! Failures are classified: [`AuthError`] inside
//! `mitogen_core::ConnectError::Method` says host key mismatch, permission
//! denied (with the methods ssh tried), wrong password, not permitted,
//! connection refused, unknown or unreachable host, timeout, or no `sh` on
//! the target. What the program printed is quoted as plain text (control
//! characters applied or escaped).
//!
//! [`Ssh::multiplex`] shares one OpenSSH master connection between runs
//! (`ControlMaster`/`ControlPersist`, as Ansible does), so a second
//! connection to the same host skips the handshake; it is off by default.
//!
//! [`BecomePool`] bounds become contexts per parent (default 20), shutting
//! down the least recently used idle one at the limit.
//!
//! Dependencies beyond the core: `serde` (methods' options travel to
//! intermediaries), `thiserror`, `log`, `parking_lot`, `rustix` (the
//! effective uid, for the control socket directory).

mod auth;
mod become_;
mod control;
mod error;
mod exec;
mod pool;
mod prompt;
mod ssh;

pub use become_::{Doas, SUDO_PROMPT, Su, Sudo};
pub use control::{ControlCommand, ControlMaster};
pub use error::AuthError;
pub use exec::Exec;
pub use pool::{BecomePool, DEFAULT_LIMIT};
pub use ssh::{HostKeyChecking, Ssh};

use mitogen_core::{ConnectError, Context, Method, Registry, Router};

/// Registers every method of this crate (call it in the registration
/// function passed to `mitogen_core::init`, on both ends).
pub fn register(reg: &mut Registry) {
    reg.add_error::<AuthError>()
        .add_method::<Ssh>()
        .add_method::<Sudo>()
        .add_method::<Su>()
        .add_method::<Doas>()
        .add_method::<Exec>();
}

/// Connects to many targets at once, at most `concurrency` at a time;
/// results come back in the order of `methods`.
pub fn connect_all<M: Method + Sync>(
    router: &Router,
    methods: &[M],
    concurrency: usize,
) -> Vec<Result<Context, ConnectError>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Context, ConnectError>>>> = methods
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, methods.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(m) = methods.get(i) else { break };
                    let r = router.connect(m);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or(Err(ConnectError::Shutdown))
        })
        .collect()
}

/// The README's code, compiled as a doc test so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
