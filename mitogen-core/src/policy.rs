//! Who may deliver a message to a handler.
//!
//! Every handler carries a [`Policy`]. The router checks it after the
//! reverse-path source check (see [`crate::router`]) and before delivery; a
//! refused message gets a dead reply saying "refused by policy".

#![deny(clippy::disallowed_methods)] // sans-IO: no clock, threads or processes (clippy.toml)

use crate::ids::ContextId;
use crate::message::Message;
use std::sync::Arc;

/// Where a message came from, as the router saw it.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The remote context of the stream it arrived on, or `None` when it was
    /// sent by a thread of this process.
    pub stream_remote: Option<ContextId>,
    /// Whether it arrived on the stream to this context's parent.
    pub from_parent_stream: bool,
}

impl Source {
    /// A message made by this process (no stream).
    pub const LOCAL: Self = Self {
        stream_remote: None,
        from_parent_stream: false,
    };
}

type CustomFn = dyn Fn(&Message, &Source, &Trust<'_>) -> bool + Send + Sync;

/// What this context trusts: its own id and its ancestors.
#[derive(Debug)]
pub struct Trust<'a> {
    /// This context's id.
    pub me: ContextId,
    /// Its parent, grandparent, ... up to the controller.
    pub ancestors: &'a [ContextId],
}

impl Trust<'_> {
    /// Mitogen's `has_parent_authority`: the message acts under the authority
    /// of this context itself or of one of its ancestors.
    pub fn has_parent_authority(&self, msg: &Message) -> bool {
        msg.auth_id == self.me || self.ancestors.contains(&msg.auth_id)
    }
}

/// A handler's delivery policy.
#[derive(Clone)]
#[non_exhaustive]
pub enum Policy {
    /// Any source that passed the reverse-path check.
    Any,
    /// Only messages under the authority of this context or an ancestor.
    /// Calls, shutdown and service activation use this.
    ParentAuthority,
    /// Only messages sent by the context directly at the other end of the
    /// stream they arrived on, from below (a child, not the parent).
    ImmediateChild,
    /// Only messages whose `src_id` is this context, or dead messages (which
    /// intermediaries send when a route fails). Reply receivers use this.
    Respondent(ContextId),
    /// A closure deciding for itself.
    Custom(Arc<CustomFn>),
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::ParentAuthority => f.write_str("ParentAuthority"),
            Self::ImmediateChild => f.write_str("ImmediateChild"),
            Self::Respondent(id) => write!(f, "Respondent({id})"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Policy {
    /// A custom policy from a closure.
    pub fn custom(
        f: impl Fn(&Message, &Source, &Trust<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// Whether `msg`, arriving from `src`, may be delivered.
    pub fn allows(&self, msg: &Message, src: &Source, trust: &Trust<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::ParentAuthority => trust.has_parent_authority(msg),
            Self::ImmediateChild => {
                !src.from_parent_stream && src.stream_remote == Some(msg.src_id)
            }
            Self::Respondent(id) => msg.src_id == *id || msg.is_dead(),
            Self::Custom(f) => f(msg, src, trust),
        }
    }
}
