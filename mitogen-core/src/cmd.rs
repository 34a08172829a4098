//! What other threads hand the broker: [`Cmd`]s on a channel, woken by a
//! [`mio::Waker`] ([`BrokerTx`]).
//!
//! A leaf of the IO side: the router driver, receivers' gauges and the
//! connection code send commands without knowing the broker, and the broker
//! reads them without knowing who sent them.

use crate::stream::{StreamId, StreamOut};
use bytes::BytesMut;
use mio::{Poll, Token, Waker};
use std::fs::File;
use std::io;
use std::process::Child;
use std::sync::Arc;
use std::time::Instant;

/// The poll token of the broker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Work handed to the broker by other threads.
pub(crate) enum Cmd {
    /// Start polling a new stream.
    Register(Registration),
    /// The stream has queued output: ask for WRITABLE.
    WantWrite(StreamId),
    /// Mark a child stream detached: never kill it, keep reaping it.
    Detached(StreamId),
    /// Shut the broker down; with `Some(code)` exit the process afterwards.
    Shutdown(Option<i32>),
    /// Run a function on the broker thread at a time.
    Timer(Instant, Box<dyn FnOnce() + Send>),
    /// A receiver's queue went back under its low-water mark: resume the
    /// streams paused on it.
    Drained,
}

/// A new stream for the broker to poll.
pub(crate) struct Registration {
    /// Its write half (already known to the router core).
    pub(crate) out: Arc<StreamOut>,
    /// The fd frames are read from.
    pub(crate) rx: Arc<File>,
    /// Whether writes go to another fd than `rx`.
    pub(crate) separate_tx: Option<Arc<File>>,
    /// The process at the other end, when this context started it.
    pub(crate) child: Option<Child>,
    /// The child's stderr and, for methods that answer prompts, its
    /// terminal: read and logged line by line (at most two).
    pub(crate) logs: Vec<File>,
    /// Held open until the stream closes (a method's terminal: closing it
    /// would hang up the program).
    pub(crate) keep: Vec<File>,
    /// Bytes already read past the greeting.
    pub(crate) initial: BytesMut,
}

/// The sending side of the broker's command queue.
#[derive(Clone)]
pub(crate) struct BrokerTx {
    tx: crossbeam_channel::Sender<Cmd>,
    waker: Arc<Waker>,
}

impl BrokerTx {
    /// Queues `cmd` and wakes the broker (nothing happens once it is gone).
    pub(crate) fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake broker: {e}");
            }
        }
    }
}

/// Creates the poll, waker and command queue.
pub(crate) fn channel() -> io::Result<(BrokerTx, Poll, crossbeam_channel::Receiver<Cmd>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    Ok((BrokerTx { tx, waker }, poll, rx))
}
