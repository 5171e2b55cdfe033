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

use tokio::sync::{mpsc, oneshot};

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

/// Which answer about a submitted publish a [`Report`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The session accepted the publish (queued in its outbox; with a store and QoS >= 1,
    /// written to the store's outbox) or refused it.
    Accepted,
    /// The broker acknowledged the publish (PUBACK / PUBCOMP; QoS 0: written to the
    /// connection), or it failed.
    Acknowledged,
}

/// One answer about a publish submitted with
/// [`SessionHandle::submit_reporting`](crate::SessionHandle::submit_reporting).
///
/// Each such publish gets exactly two reports, one per [`Stage`], whatever happens to
/// it (a session that goes away answers [`Error::SessionClosed`]). They may arrive in
/// either order when the publish was refused: then the [`Stage::Accepted`] report holds
/// the refusal and the [`Stage::Acknowledged`] one only says it never went out.
#[derive(Debug)]
pub struct Report {
    /// The tag given to `submit_reporting`.
    pub tag: u64,
    /// Which answer this is.
    pub stage: Stage,
    /// The answer.
    pub result: Result<(), Error>,
}

/// The sending side of a report channel, given to
/// [`SessionHandle::submit_reporting`](crate::SessionHandle::submit_reporting); cheap to
/// clone. See [`reports`].
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Report>,
}

/// The receiving side of a report channel. See [`reports`].
#[derive(Debug)]
pub struct Reports {
    rx: mpsc::UnboundedReceiver<Report>,
}

/// A channel for the answers of many submitted publishes: one wake-up of the receiver
/// takes every answer that arrived since the last ([`Reports::recv_many`]), where
/// [`Submitted`] would need a future per publish.
///
/// The channel itself has no bound: it holds at most two reports per publish submitted
/// and not yet answered and read, so it is bounded by what its user keeps in flight (a
/// forwarding rule: its window). A user must bound that.
pub fn reports() -> (Reporter, Reports) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Reporter { tx }, Reports { rx })
}

impl Reports {
    /// The next report; `None` once every [`Reporter`] and every pending answer is gone.
    pub async fn recv(&mut self) -> Option<Report> {
        self.rx.recv().await
    }

    /// Waits for at least one report and moves up to `limit` of those waiting into `out`;
    /// returns how many (0 once the channel is closed and empty).
    pub async fn recv_many(&mut self, out: &mut Vec<Report>, limit: usize) -> usize {
        self.rx.recv_many(out, limit.max(1)).await
    }
}

/// Where one answer about a submitted publish goes: its report, sent once, answered with
/// [`Error::SessionClosed`] when dropped unanswered (so that every publish gets both of
/// its reports).
#[derive(Debug)]
pub(crate) struct ReportTo {
    tx: Option<mpsc::UnboundedSender<Report>>,
    tag: u64,
    stage: Stage,
    session: Arc<str>,
}

impl ReportTo {
    /// The two answers of the publish tagged `tag` into `session`.
    pub(crate) fn pair(reporter: &Reporter, tag: u64, session: &Arc<str>) -> (ReportTo, ReportTo) {
        let to = |stage| ReportTo {
            tx: Some(reporter.tx.clone()),
            tag,
            stage,
            session: Arc::clone(session),
        };
        (to(Stage::Accepted), to(Stage::Acknowledged))
    }

    /// Sends the answer.
    pub(crate) fn send(mut self, result: Result<(), Error>) {
        self.report(result);
    }

    fn report(&mut self, result: Result<(), Error>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Report {
                tag: self.tag,
                stage: self.stage,
                result,
            });
        }
    }
}

impl Drop for ReportTo {
    fn drop(&mut self) {
        let closed = Error::SessionClosed(self.session.to_string());
        self.report(Err(closed));
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

    #[test]
    fn a_report_is_sent_once_and_a_dropped_one_says_the_session_closed() {
        let (reporter, mut reports) = reports();
        let name: Arc<str> = Arc::from("s");
        let (accepted, acknowledged) = ReportTo::pair(&reporter, 7, &name);
        accepted.send(Ok(()));
        drop(acknowledged);
        drop(reporter);
        let mut got = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        while rt.block_on(reports.recv_many(&mut got, 10)) > 0 {}
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].tag, got[0].stage), (7, Stage::Accepted));
        assert!(got[0].result.is_ok());
        assert_eq!((got[1].tag, got[1].stage), (7, Stage::Acknowledged));
        assert!(matches!(&got[1].result, Err(Error::SessionClosed(s)) if s == "s"));
    }
}
