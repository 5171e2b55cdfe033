//! [`PublishLane`]: ordered, pipelined publishing into one session.
//!
//! [`SessionHandle::publish`](crate::SessionHandle::publish) awaits each publish; a caller
//! that wants many publishes in flight at once *and* their order kept (a forwarding rule)
//! submits them through a lane with [`SessionHandle::submit`](crate::SessionHandle::submit):
//! each submission returns once the publish is in the session's mailbox (so submissions
//! reach the session in the order they were made), with a [`Submitted`] to await its
//! acceptance and its acknowledgement.
//!
//! Order across a refusal: when the session refuses a lane's publish for a reason that may
//! pass (its queue is full, it is closing), the lane is *held*: the session refuses every
//! later publish of the lane with [`Error::LaneHeld`] until the caller
//! [`reopen`](PublishLane::reopen)s it, so that nothing submitted after the refused publish
//! overtakes it. The caller resubmits the refused publish and those held behind it, in
//! order, then the new ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Responder;
use crate::error::Error;

/// The state shared by a lane and its publishes in a session's mailbox.
#[derive(Debug)]
struct Gate {
    /// The epoch new submissions carry.
    epoch: AtomicU64,
    /// Submissions of this epoch or older are refused ([`Error::LaneHeld`]).
    held_through: AtomicU64,
}

/// An ordered lane of publishes into sessions (see the [module docs](self)).
///
/// ```no_run
/// # async fn f(manager: mqtt_sessions::SessionManager) -> Result<(), mqtt_sessions::Error> {
/// use mqtt_sessions::{Publish, PublishLane, QoS};
///
/// let cloud = manager.session("cloud")?;
/// let lane = PublishLane::new();
/// let mut pending = Vec::new();
/// for i in 0..100 {
///     let p = Publish::new("plant/counter", i.to_string()).qos(QoS::AtLeastOnce);
///     // Returns once the publish is in the session's mailbox: order is kept.
///     pending.push(cloud.submit(&lane, p).await?);
/// }
/// for p in pending {
///     p.acknowledged().await?; // the broker's PUBACK
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PublishLane {
    gate: Arc<Gate>,
}

impl Default for PublishLane {
    fn default() -> Self {
        PublishLane::new()
    }
}

impl PublishLane {
    /// A new, open lane.
    pub fn new() -> PublishLane {
        PublishLane {
            gate: Arc::new(Gate {
                epoch: AtomicU64::new(1),
                held_through: AtomicU64::new(0),
            }),
        }
    }

    /// True while the lane is held: publishes submitted now are refused with
    /// [`Error::LaneHeld`].
    pub fn is_held(&self) -> bool {
        self.gate.held_through.load(Ordering::Acquire) >= self.gate.epoch.load(Ordering::Acquire)
    }

    /// Holds the lane: the publishes submitted so far that the session has not taken yet,
    /// and every later one, are refused with [`Error::LaneHeld`] until
    /// [`reopen`](Self::reopen). The session does this itself when it refuses a lane's
    /// publish for a passing reason; a caller does it when it finds the session gone.
    pub fn hold(&self) {
        self.ticket().hold();
    }

    /// Opens the lane again: publishes submitted from now on are taken. Call it once
    /// every publish submitted before has been answered, then resubmit the refused ones
    /// first.
    pub fn reopen(&self) {
        let held = self.gate.held_through.load(Ordering::Acquire);
        self.gate.epoch.fetch_max(held + 1, Ordering::AcqRel);
    }

    /// The mark a submission carries.
    pub(crate) fn ticket(&self) -> LaneTicket {
        LaneTicket {
            gate: Arc::clone(&self.gate),
            epoch: self.gate.epoch.load(Ordering::Acquire),
        }
    }
}

/// A lane's mark on one submitted publish: the epoch it was submitted in.
#[derive(Debug)]
pub(crate) struct LaneTicket {
    gate: Arc<Gate>,
    epoch: u64,
}

impl LaneTicket {
    /// The lane was held at or after this publish's epoch: refuse it.
    pub(crate) fn is_held(&self) -> bool {
        self.gate.held_through.load(Ordering::Acquire) >= self.epoch
    }

    /// Holds the lane from this publish's epoch on.
    pub(crate) fn hold(&self) {
        self.gate
            .held_through
            .fetch_max(self.epoch, Ordering::AcqRel);
    }
}

/// A publish submitted through a [`PublishLane`]: await its acceptance, then its
/// acknowledgement.
#[derive(Debug)]
pub struct Submitted {
    session: Arc<str>,
    accepted: Option<oneshot::Receiver<Result<(), Error>>>,
    acknowledged: oneshot::Receiver<Result<(), Error>>,
}

impl Submitted {
    pub(crate) fn new(session: Arc<str>) -> (Submitted, Responder, Responder) {
        let (acc_tx, acc_rx) = oneshot::channel();
        let (ack_tx, ack_rx) = oneshot::channel();
        (
            Submitted {
                session,
                accepted: Some(acc_rx),
                acknowledged: ack_rx,
            },
            acc_tx,
            ack_tx,
        )
    }

    fn closed(&self) -> Error {
        Error::SessionClosed(self.session.to_string())
    }

    /// Waits until the session accepted the publish: queued in its outbox (with a store
    /// and QoS >= 1: written to the store's outbox, so it survives a crash), or refused
    /// ([`Error::QueueFull`], [`Error::LaneHeld`], [`Error::SessionClosed`], ...). A
    /// second call returns `Ok(())` at once.
    pub async fn accepted(&mut self) -> Result<(), Error> {
        match self.accepted.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(self.closed())),
            None => Ok(()),
        }
    }

    /// Waits until the broker acknowledged the publish (PUBACK / PUBCOMP; QoS 0: written
    /// to the connection). Returns the refusal when it was not accepted.
    pub async fn acknowledged(mut self) -> Result<(), Error> {
        self.accepted().await?;
        let closed = self.closed();
        self.acknowledged.await.unwrap_or(Err(closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_refuses_what_was_submitted_before_it_and_a_reopen_lets_new_submissions_in() {
        let lane = PublishLane::new();
        let before = lane.ticket();
        assert!(!lane.is_held() && !before.is_held());
        // The session refuses `before` for a passing reason: it holds the lane.
        before.hold();
        let queued_behind = lane.ticket();
        assert!(lane.is_held());
        assert!(
            queued_behind.is_held(),
            "submitted after the refusal, before the reopen"
        );
        lane.reopen();
        assert!(!lane.is_held());
        let resubmitted = lane.ticket();
        assert!(!resubmitted.is_held());
        // A late refusal of an old submission does not hold the reopened lane.
        queued_behind.hold();
        assert!(!lane.is_held() && !resubmitted.is_held());
        // A caller's own hold (the session is gone) holds the current epoch.
        lane.hold();
        assert!(lane.is_held() && resubmitted.is_held());
    }
}
