//! Typed identifiers: contexts and handles.

#![deny(clippy::disallowed_methods)] // sans-IO: no clock, threads or processes (clippy.toml)

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one context (one process) in the tree.
///
/// The controller is always `ContextId(0)`; children get ids handed out by the
/// controller (see [`crate::Router::connect`]).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ContextId(pub u32);

impl ContextId {
    /// The controller (Mitogen's "master") is always context 0.
    pub const CONTROLLER: Self = Self(0);
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message handle: the "port number" of a handler inside one context.
///
/// Handles below [`Handle::FIRST_DYNAMIC`] are well-known and keep Python
/// Mitogen's numbers where the idea is the same.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Handle(pub u32);

impl Handle {
    /// "No handle": a message with `reply_to == NONE` expects no reply.
    pub const NONE: Self = Self(0);
    /// Run a registered function ([`crate::Function`]).
    pub const CALL_FUNCTION: Self = Self(101);
    /// A `log` record forwarded to the controller.
    pub const FORWARD_LOG: Self = Self(102);
    /// A descendant announces a new route to its ancestors.
    pub const ADD_ROUTE: Self = Self(103);
    /// A route is withdrawn (the context behind it is gone).
    pub const DEL_ROUTE: Self = Self(104);
    /// A context asks the controller for a block of context ids.
    pub const ALLOCATE_ID: Self = Self(105);
    /// Ask a context to shut down (cascades to its children).
    pub const SHUTDOWN: Self = Self(106);
    /// A child tells its parent it is detaching and should not be killed.
    pub const DETACHING: Self = Self(109);
    /// Reserved for `mitogen-service`: call a method of a named service.
    pub const CALL_SERVICE: Self = Self(110);
    /// The caller of a call gave up waiting (its payload is the call's
    /// reply handle): the call is skipped if it has not started, and
    /// [`crate::CallCx::is_cancelled`] turns true if it is running.
    pub const CANCEL_CALL: Self = Self(111);
    /// Sets the log level of a context and its descendants (payload: the
    /// level as a `u8`), sent when the controller's `log::max_level` changes.
    pub const SET_LOG_LEVEL: Self = Self(112);
    /// In `reply_to`, marks a dead message; its payload is the reason.
    pub const IS_DEAD: Self = Self(999);
    /// Dynamic handles (receivers, replies) start here.
    pub const FIRST_DYNAMIC: Self = Self(1000);
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A hasher for maps keyed by small integer ids (context ids, handles,
/// stream ids): a multiply-and-rotate mix instead of SipHash, which cost a
/// tenth of a call's instructions. Ids come from this process or are
/// checked against its tables, so flooding one bucket gains a peer nothing
/// it could not do by sending messages.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A `HashMap` keyed by ids, with [`IdHasher`].
pub(crate) type IdMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
