//! Bounded become contexts per parent (Python Mitogen's interpreter
//! recycling).
//!
//! A play that loops over many `become_user` values would otherwise leave
//! one agent per user on a host. A [`BecomePool`] reuses the context for an
//! identical request, and when a parent already has `limit` become contexts
//! it shuts down the least recently used idle one (no call in flight) before
//! starting another. Python Mitogen shut down the most recently *created*
//! one; least recently *used* keeps the hot ones.

use mitogen_core::{ConnectError, Context, ContextId, Method, Router};
use parking_lot::Mutex;
use std::time::Instant;

/// Default number of become contexts per parent.
pub const DEFAULT_LIMIT: usize = 20;

struct Entry {
    parent: Option<ContextId>,
    key: (&'static str, Vec<u8>),
    ctx: Context,
    last_used: Instant,
}

/// Reuses and bounds become contexts (sudo, su, doas) per parent context.
///
/// ```no_run
/// # fn demo(router: &mitogen_core::Router, host: &mitogen_core::Context) -> Result<(), mitogen_core::ConnectError> {
/// let pool = mitogen_ssh::BecomePool::new(20);
/// for user in ["www-data", "postgres", "www-data"] {
///     // The second "www-data" reuses the first context.
///     let ctx = pool.get(router, &mitogen_ssh::Sudo::new(user), Some(host))?;
/// }
/// # Ok(()) }
/// ```
pub struct BecomePool {
    limit: usize,
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for BecomePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BecomePool")
            .field("limit", &self.limit)
            .field("live", &self.entries.lock().len())
            .finish()
    }
}

impl BecomePool {
    /// A pool allowing `limit` become contexts per parent (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The context for `method` under `via` (or under this router's own
    /// context): an existing live one with identical options, or a new one,
    /// after shutting down the least recently used idle sibling if the
    /// parent is at its limit.
    ///
    /// # Errors
    /// What connecting reports.
    pub fn get<M: Method>(
        &self,
        router: &Router,
        method: &M,
        via: Option<&Context>,
    ) -> Result<Context, ConnectError> {
        let opts = mitogen_core::message::encode_payload(method)
            .map_err(|e| ConnectError::BadOptions(e.to_string()))?;
        let key = (M::NAME, opts);
        let parent = via.map(Context::id);
        let mut entries = self.entries.lock();
        entries.retain(|e| router.is_connected(e.ctx.id()));
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.parent == parent && e.key == key)
        {
            e.last_used = Instant::now();
            return Ok(e.ctx.clone());
        }
        let siblings = entries.iter().filter(|e| e.parent == parent).count();
        if siblings >= self.limit {
            let victim = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.parent == parent && router.pending_calls(e.ctx.id()) == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let e = entries.remove(i);
                    log::debug!(
                        "become pool: shutting down idle {} to stay within {}",
                        e.ctx.name(),
                        self.limit
                    );
                    e.ctx.shutdown();
                }
                None => log::warn!(
                    "become pool: all {siblings} contexts under {parent:?} are busy; going over the limit of {}",
                    self.limit
                ),
            }
        }
        // Connect without holding the lock: it can take seconds.
        drop(entries);
        let ctx = match via {
            Some(v) => router.connect_via(method, v)?,
            None => router.connect(method)?,
        };
        self.entries.lock().push(Entry {
            parent,
            key,
            ctx: ctx.clone(),
            last_used: Instant::now(),
        });
        Ok(ctx)
    }

    /// Live contexts in the pool.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the pool holds no context.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
