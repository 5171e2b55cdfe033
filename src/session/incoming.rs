//! The incoming-message path: from the driver task straight to the consumers.
//!
//! A [`Dispatcher`] is called on the driver task for every received PUBLISH, with no
//! actor hop and no lock (consumers are held in an `ArcSwap` snapshot). Delivery to a
//! bounded consumer that is full depends on the QoS:
//! - QoS 0: the consumer's overflow policy applies (dropped and counted, the oldest
//!   dropped, or a pause of the session's reading bounded by `max_stall`);
//! - QoS 1 and 2: the dispatcher returns a future that completes once every consumer
//!   accepted the message; the PUBACK/PUBREC is sent only then (see `Acker`), so a slow
//!   consumer slows the broker down instead of losing acknowledged data, while the driver
//!   keeps polling (keep-alive continues).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::message::Message;

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
