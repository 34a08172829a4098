//! Receivers, senders, select and latches: how user threads wait.
//!
//! Every blocking wait takes an optional deadline (`None` waits forever).

use crate::Router;
use crate::error::RecvError;
use crate::ids::{ContextId, Handle};
use crate::message::{self, Message, PayloadError};
use crate::policy::Policy;
use crate::router::{Gauge, HandlerEntry, Shared, Sink};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receives messages sent to one handle of this context.
///
/// Dropping it removes the handler; later messages to the handle get a dead
/// reply ("invalid handle").
pub struct Receiver {
    shared: Arc<Shared>,
    handle: Handle,
    /// The queue's size, for backpressure; `None` for a one-shot reply
    /// receiver, which holds at most one message.
    gauge: Option<Arc<Gauge>>,
    rx: crossbeam_channel::Receiver<Message>,
    abandoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("context", &self.shared.me())
            .field("handle", &self.handle)
            .finish()
    }
}

impl Receiver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        policy: Policy,
        respondent: Option<ContextId>,
        persist: bool,
        label: &'static str,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = shared.alloc_handle();
        let gauge = persist.then(|| Gauge::new(shared.broker.clone()));
        shared.add_handler(
            handle,
            HandlerEntry {
                policy,
                sink: Sink::Chan(tx, gauge.clone()),
                persist,
                respondent,
                label,
                since: Instant::now(),
            },
        );
        if shared.is_shut_down() {
            shared.fail_all_handlers();
        }
        Self {
            shared,
            handle,
            gauge,
            rx,
            abandoned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// For a one-shot reply receiver whose reply has not come: keeps the
    /// handle registered (discarding the reply when it comes) after this
    /// receiver is dropped, so the call still counts as pending. Returns
    /// whether it was still waiting.
    pub(crate) fn abandon(&self) -> bool {
        let waiting = self.shared.abandon_handler(self.handle);
        self.abandoned
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        waiting
    }

    /// Bytes waiting in this receiver's queue (payloads plus a small fixed
    /// cost per message). Over [`crate::limits::RECV_HIGH_WATER`] the stream
    /// that feeds it stops being read until the queue is under
    /// [`crate::limits::RECV_LOW_WATER`]: drain the receivers you open.
    pub fn queued_bytes(&self) -> usize {
        self.gauge.as_ref().map_or(0, |g| g.queued())
    }

    /// The handle messages must be addressed to.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// A [`Sender`] for this receiver, to pass to another context.
    pub fn sender(&self) -> Sender {
        Sender {
            context: self.shared.me(),
            handle: self.handle,
        }
    }

    /// Waits for the next message with no deadline.
    ///
    /// # Errors
    /// [`RecvError::Closed`] or [`RecvError::Dead`] when no message will come.
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.recv_deadline(None)
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`RecvError::Timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Waits until `deadline` (or forever for `None`) for the next message.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Message, RecvError> {
        if let Some(msg) = crate::spin::spin(deadline, || self.rx.try_recv().ok()) {
            crate::spin::note_len(msg.data.len());
            return self.took(msg);
        }
        let msg = match deadline {
            None => self.rx.recv().map_err(|_| RecvError::Closed)?,
            Some(d) => self.rx.recv_deadline(d).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
            })?,
        };
        crate::spin::note_len(msg.data.len());
        self.took(msg)
    }

    /// Returns a message if one is waiting, without blocking.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        match self.rx.try_recv() {
            Ok(m) => self.took(m).map(Some),
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(RecvError::Closed),
        }
    }

    /// Waits for the next message and decodes it as `T`.
    ///
    /// # Errors
    /// [`crate::Error::Recv`] or [`crate::Error::Payload`].
    pub fn recv_value<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
    ) -> Result<T, crate::Error> {
        Ok(self.recv_deadline(deadline)?.decode()?)
    }

    /// Accounts for a message taken off the queue, then checks for death.
    fn took(&self, msg: Message) -> Result<Message, RecvError> {
        if let Some(g) = &self.gauge {
            g.take(&msg);
        }
        check_dead(msg)
    }

    /// Iterates over messages until the channel is closed or dies.
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}

fn check_dead(msg: Message) -> Result<Message, RecvError> {
    match msg.dead_reason() {
        None => Ok(msg),
        Some(r) if r == message::DEAD_CHANNEL_CLOSED => Err(RecvError::Closed),
        Some(reason) => Err(RecvError::Dead {
            reason,
            from: msg.src_id,
        }),
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if !self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            self.shared.remove_handler(self.handle);
        }
    }
}

/// The address of a [`Receiver`]: serialisable, so it can be passed inside a
/// call and the remote side can stream values back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// The context holding the receiver.
    pub context: ContextId,
    /// The receiver's handle.
    pub handle: Handle,
}

impl Sender {
    /// Sends `value` (typed payload). When the stream towards the receiver
    /// is full (a slow consumer: its queue is over the high-water mark),
    /// waits for room for at most a minute.
    ///
    /// # Errors
    /// [`SendError::Payload`] if `value` cannot be encoded,
    /// [`SendError::Stalled`] if the stream stayed full.
    pub fn send<T: Serialize + ?Sized>(&self, router: &Router, value: &T) -> Result<(), SendError> {
        self.send_deadline(router, value, Instant::now() + crate::router::SEND_TIMEOUT)
    }

    /// [`Sender::send`], waiting for room until `deadline`.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn send_deadline<T: Serialize + ?Sized>(
        &self,
        router: &Router,
        value: &T,
        deadline: Instant,
    ) -> Result<(), SendError> {
        let mut msg = Message::typed(self.context, self.handle, value)?;
        msg.src_id = router.id();
        msg.auth_id = router.id();
        router.node.log.sync(router.shared());
        Ok(router.shared().route_until(msg, deadline)?)
    }

    /// Sends raw bytes.
    pub fn send_bytes(&self, router: &Router, data: impl Into<bytes::Bytes>) {
        router
            .node
            .send_stamped(Message::bytes(self.context, self.handle, data));
    }

    /// Tells the receiver no more messages will come ([`RecvError::Closed`]).
    pub fn close(&self, router: &Router) {
        let mut msg = Message::bytes(
            self.context,
            self.handle,
            message::DEAD_CHANNEL_CLOSED.as_bytes(),
        );
        msg.reply_to = Handle::IS_DEAD;
        router.node.send_stamped(msg);
    }
}

/// Why [`Sender::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The value could not be encoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The stream towards the receiver stayed full until the deadline.
    #[error(transparent)]
    Stalled(#[from] crate::router::Stalled),
}

/// Waits on several receivers at once.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # fn demo(router: &mitogen_core::Router) -> Result<(), mitogen_core::RecvError> {
/// let (a, b) = (router.receiver(), router.receiver());
/// let mut sel = mitogen_core::Select::new();
/// sel.add(&a);
/// sel.add(&b);
/// let (index, msg) = sel.recv_timeout(std::time::Duration::from_secs(1))?;
/// println!("receiver {index}: {:?}", msg?);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Select<'a> {
    receivers: Vec<&'a Receiver>,
}

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Self {
        Self {
            receivers: Vec::new(),
        }
    }

    /// Adds a receiver; returns its index in results.
    pub fn add(&mut self, rx: &'a Receiver) -> usize {
        self.receivers.push(rx);
        self.receivers.len() - 1
    }

    /// Waits at most `timeout` for any receiver to be ready.
    ///
    /// # Errors
    /// As [`Select::recv_deadline`].
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<(usize, Result<Message, RecvError>), RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Waits until `deadline` for any receiver to be ready and returns its
    /// index with what it produced: a message, or the error that receiver
    /// would give (a dead message, or closed: a reply receiver is closed
    /// once its reply was taken).
    ///
    /// # Errors
    /// [`RecvError::Timeout`]; [`RecvError::Closed`] for an empty select.
    pub fn recv_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Result<(usize, Result<Message, RecvError>), RecvError> {
        if self.receivers.is_empty() {
            return Err(RecvError::Closed);
        }
        let mut sel = crossbeam_channel::Select::new();
        for r in &self.receivers {
            sel.recv(&r.rx);
        }
        let op = match deadline {
            None => sel.select(),
            Some(d) => sel.select_deadline(d).map_err(|_| RecvError::Timeout)?,
        };
        let i = op.index();
        let got = op
            .recv(&self.receivers[i].rx)
            .map_err(|_| RecvError::Closed)
            .and_then(|m| self.receivers[i].took(m));
        Ok((i, got))
    }
}

/// A thread-safe queue with blocking, deadline-bounded `get` and `close`:
/// Mitogen's `Latch`.
#[derive(Debug)]
pub struct Latch<T> {
    inner: Mutex<(VecDeque<T>, bool)>,
    cond: Condvar,
}

impl<T> Default for Latch<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new((VecDeque::new(), false)),
            cond: Condvar::new(),
        }
    }
}

impl<T> Latch<T> {
    /// An empty, open latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item and wakes one waiter. Returns `false` if closed.
    pub fn put(&self, item: T) -> bool {
        let mut g = self.inner.lock();
        if g.1 {
            return false;
        }
        g.0.push_back(item);
        self.cond.notify_one();
        true
    }

    /// Takes the oldest item, waiting until `deadline` for one.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], or [`RecvError::Closed`] once closed and empty.
    pub fn get(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        let mut g = self.inner.lock();
        loop {
            if let Some(item) = g.0.pop_front() {
                return Ok(item);
            }
            if g.1 {
                return Err(RecvError::Closed);
            }
            match deadline {
                None => self.cond.wait(&mut g),
                Some(d) => {
                    if self.cond.wait_until(&mut g, d).timed_out() && g.0.is_empty() {
                        return Err(if g.1 {
                            RecvError::Closed
                        } else {
                            RecvError::Timeout
                        });
                    }
                }
            }
        }
    }

    /// Closes the latch: waiters wake with [`RecvError::Closed`] once the
    /// queue is empty.
    pub fn close(&self) {
        self.inner.lock().1 = true;
        self.cond.notify_all();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().0.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
