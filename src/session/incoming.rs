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
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::message::{Message, QoS};

/// A future that completes when a message has been accepted by every consumer.
pub type Pending = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Receives every message of a session, on the session's driver task. Must not block.
pub trait Dispatcher: Send + Sync + 'static {
    /// Hands `msg` to its consumers. Returns `None` when every consumer took it (or,
    /// for QoS 0, dropped it and counted), or a future to await before acknowledging.
    fn dispatch(&self, msg: &Message) -> Option<Pending>;
}

/// The session-level consumers: bounded channels handed out by
/// [`SessionHandle::messages`](crate::SessionHandle::messages).
#[derive(Debug, Default)]
pub struct SessionSinks {
    senders: ArcSwap<Vec<mpsc::Sender<Message>>>,
    dropped: AtomicU64,
}

impl SessionSinks {
    /// Adds a consumer channel of `capacity` and returns its receiving end.
    pub fn add(&self, capacity: usize) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.senders.rcu(|old| {
            let mut v: Vec<_> = old.iter().filter(|s| !s.is_closed()).cloned().collect();
            v.push(tx.clone());
            v
        });
        rx
    }

    /// QoS 0 messages dropped because a consumer was full.
    pub fn dropped(&self) -> u64 {
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
    /// Offers `msg` to every session-level receiver; waits for room go into `waits`.
    pub fn offer(&self, msg: &Message, waits: &mut Waits) {
        let senders = self.senders.load();
        if senders.is_empty() {
            return;
        }
        let mut closed = false;
        for tx in senders.iter() {
            match tx.try_send(msg.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    if msg.qos == QoS::AtMostOnce {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let tx = tx.clone();
                        waits.push(Box::pin(async move {
                            let _ = tx.send(m).await;
                        }));
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.prune();
        }
    }
}

/// The waits of one message on its way to several consumers, combined into one future
/// that completes when all did (in order). No allocation for none or one.
#[derive(Default)]
pub struct Waits {
    first: Option<Pending>,
    more: Vec<Pending>,
}

impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waits")
            .field(
                "count",
                &(usize::from(self.first.is_some()) + self.more.len()),
            )
            .finish()
    }
}

impl Waits {
    /// Adds one wait.
    #[inline]
    pub fn push(&mut self, w: Pending) {
        match self.first {
            None => self.first = Some(w),
            Some(_) => self.more.push(w),
        }
    }

    /// The combined wait, if any.
    pub fn finish(self) -> Option<Pending> {
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
