//! The incoming-message path: from the driver task straight to the consumers.
//!
//! A [`Dispatcher`] is called on the driver task for every received PUBLISH, with no
//! actor hop and no lock (consumers are held in an [`ArcSwap`] snapshot). Delivery to a
//! bounded consumer that is full depends on the QoS:
//! - QoS 0: the message is dropped for that consumer and counted;
//! - QoS 1 and 2: the dispatcher returns a future that completes once every consumer
//!   accepted the message; the PUBACK/PUBREC is sent only then (see `Acker`), so a slow
//!   consumer slows the broker down instead of losing acknowledged data, while the driver
//!   keeps polling (keep-alive continues).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::message::{Message, QoS};

/// A future that completes when a message has been accepted by every consumer.
pub(crate) type RoomWait = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Receives every message of a session, on the session's driver task. Must not block.
pub(crate) trait Dispatcher: Send + Sync + 'static {
    /// Hands `msg` to its consumers. Returns `None` when every consumer took it (or,
    /// for QoS 0, dropped it and counted), or a future: for QoS >= 1, to await before
    /// acknowledging; for QoS 0, a bounded pause to await before reading on.
    ///
    /// `max_stall` bounds the pause a full `Backpressure` route may ask for now.
    fn dispatch(&self, msg: &Message, max_stall: std::time::Duration) -> Option<RoomWait>;
}

/// The session-level consumers: bounded channels handed out by
/// [`SessionHandle::messages`](crate::SessionHandle::messages).
#[derive(Debug, Default)]
pub(crate) struct SessionSinks {
    senders: ArcSwap<Vec<mpsc::Sender<Message>>>,
    dropped: AtomicU64,
    /// QoS >= 1 messages waiting for room in a receiver: later ones wait behind them, so
    /// that the receivers see the session's messages in the order they arrived.
    waiting: Arc<AtomicUsize>,
}

/// Counts one message waiting for room in a consumer's queue while it lives (also when
/// its future is dropped unfinished, e.g. with its session): while the count is above
/// zero, later QoS >= 1 messages wait behind, so that the consumer sees them in order.
/// Used by the session receivers here and by the routes' queues.
pub(crate) struct WaitingForRoom(Arc<AtomicUsize>);

impl WaitingForRoom {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> WaitingForRoom {
        count.fetch_add(1, Ordering::AcqRel);
        WaitingForRoom(Arc::clone(count))
    }
}

impl Drop for WaitingForRoom {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionSinks {
    /// Adds a consumer channel of `capacity` and returns its receiving end.
    pub(crate) fn add(&self, capacity: usize) -> SessionMessages {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.senders.rcu(|old| {
            let mut v: Vec<_> = old.iter().filter(|s| !s.is_closed()).cloned().collect();
            v.push(tx.clone());
            v
        });
        SessionMessages { rx }
    }

    /// QoS 0 messages dropped because a consumer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn prune(&self) {
        self.senders.rcu(|old| {
            old.iter()
                .filter(|s| !s.is_closed())
                .cloned()
                .collect::<Vec<_>>()
        });
    }
}

impl SessionSinks {
    /// True when no receiver was handed out (or all were closed and pruned).
    pub(crate) fn is_empty(&self) -> bool {
        self.senders.load().is_empty()
    }

    /// Offers `msg` to every session-level receiver; waits for room go into `waits`.
    /// Returns true when at least one receiver took it (or will, once it has room).
    pub(crate) fn offer(&self, msg: &Message, waits: &mut RoomWaits) -> bool {
        let senders = self.senders.load();
        if senders.is_empty() {
            return false;
        }
        let mut closed = false;
        let mut taken = false;
        // Earlier messages wait for room: this one waits behind them, in every receiver.
        let behind = msg.qos != QoS::AtMostOnce && self.waiting.load(Ordering::Acquire) > 0;
        for tx in senders.iter() {
            let sent = if behind {
                Err(mpsc::error::TrySendError::Full(msg.clone()))
            } else {
                tx.try_send(msg.clone())
            };
            match sent {
                Ok(()) => taken = true,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    taken = true;
                    if msg.qos == QoS::AtMostOnce {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let tx = tx.clone();
                        let waiting = WaitingForRoom::new(&self.waiting);
                        waits.push(Box::pin(async move {
                            let _waiting = waiting;
                            // The receiver went away while this waited for room: it
                            // was never handed over, so the broker must send it again.
                            if let Err(mpsc::error::SendError(m)) = tx.send(m).await {
                                m.leave_unacknowledged();
                            }
                        }));
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.prune();
        }
        taken
    }
}

/// Every message one session receives, in a bounded channel
/// ([`SessionHandle::messages`](crate::SessionHandle::messages)).
///
/// A QoS >= 1 message is acknowledged to the broker once the application has dropped it
/// (see [`Message`]'s acknowledgement rules). Messages still queued when this receiver is
/// dropped are left unacknowledged, so a persistent session gets them again.
#[derive(Debug)]
pub struct SessionMessages {
    rx: mpsc::Receiver<Message>,
}

impl SessionMessages {
    /// The next message; `None` once the session is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message if one is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Drop for SessionMessages {
    fn drop(&mut self) {
        // Closed first, so that nothing more arrives; what was queued was never handled.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            m.leave_unacknowledged();
        }
    }
}

/// The waits of one message on its way to several consumers, combined into one future
/// that completes when all did (in order). No allocation for none or one.
#[derive(Default)]
pub struct RoomWaits {
    first: Option<RoomWait>,
    more: Vec<RoomWait>,
}

impl std::fmt::Debug for RoomWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomWaits")
            .field(
                "count",
                &(usize::from(self.first.is_some()) + self.more.len()),
            )
            .finish()
    }
}

impl RoomWaits {
    /// Adds one wait.
    #[inline]
    pub fn push(&mut self, w: RoomWait) {
        match self.first {
            None => self.first = Some(w),
            Some(_) => self.more.push(w),
        }
    }

    /// The combined wait, if any.
    pub fn finish(self) -> Option<RoomWait> {
        let first = self.first?;
        if self.more.is_empty() {
            return Some(first);
        }
        let more = self.more;
        Some(Box::pin(async move {
            first.await;
            for w in more {
                w.await;
            }
        }))
    }
}
