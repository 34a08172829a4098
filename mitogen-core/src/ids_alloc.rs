//! Context id allocation.
//!
//! The controller owns the id space. Any other context that starts children
//! asks the controller for a block of ids (ALLOCATE_ID, Mitogen's scheme) and
//! hands them out locally until the block runs out.

use crate::error::ConnectError;
use crate::ids::{ContextId, Handle};
use crate::message::Message;
use crate::policy::Policy;
use crate::router::{HandlerEntry, Shared, Sink};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Ids handed out per ALLOCATE_ID request.
pub(crate) const BLOCK_SIZE: u32 = 1000;

pub(crate) struct IdAllocator {
    is_controller: bool,
    /// Next id and one past the last of the current block.
    block: Mutex<(u32, u32)>,
}

impl IdAllocator {
    pub(crate) fn new(is_controller: bool) -> Self {
        let block = if is_controller { (1, u32::MAX) } else { (0, 0) };
        Self {
            is_controller,
            block: Mutex::new(block),
        }
    }

    /// The controller's side: reserve `n` ids.
    pub(crate) fn reserve(&self, n: u32) -> Option<(u32, u32)> {
        let mut b = self.block.lock();
        let start = b.0;
        let end = start.checked_add(n).filter(|e| *e <= b.1)?;
        b.0 = end;
        Some((start, end))
    }

    /// One new context id; an agent may ask the controller (blocking up to 30 s).
    pub(crate) fn allocate(&self, shared: &Shared) -> Result<ContextId, ConnectError> {
        {
            let mut b = self.block.lock();
            if b.0 < b.1 {
                b.0 += 1;
                return Ok(ContextId(b.0 - 1));
            }
        }
        if self.is_controller {
            return Err(ConnectError::AllocateId(
                "context id space exhausted".into(),
            ));
        }
        let (start, end) = request_block(shared)?;
        let mut b = self.block.lock();
        *b = (start + 1, end);
        Ok(ContextId(start))
    }
}

fn request_block(shared: &Shared) -> Result<(u32, u32), ConnectError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let reply = shared.alloc_handle();
    shared.add_handler(
        reply,
        HandlerEntry {
            policy: Policy::Respondent(ContextId::CONTROLLER),
            sink: Sink::Chan(tx, None),
            persist: false,
            respondent: Some(ContextId::CONTROLLER),
            label: "allocate-id reply",
            since: Instant::now(),
        },
    );
    let mut msg = Message::bytes(ContextId::CONTROLLER, Handle::ALLOCATE_ID, Vec::new());
    msg.src_id = shared.me();
    msg.auth_id = shared.me();
    msg.reply_to = reply;
    shared.route(msg);
    let got = rx.recv_timeout(Duration::from_secs(30));
    shared.remove_handler(reply);
    let msg = got.map_err(|_| ConnectError::AllocateId("no answer from the controller".into()))?;
    if let Some(reason) = msg.dead_reason() {
        return Err(ConnectError::AllocateId(reason));
    }
    msg.decode::<(u32, u32)>()
        .map_err(|e| ConnectError::AllocateId(e.to_string()))
}
