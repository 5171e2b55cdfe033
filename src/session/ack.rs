//! The acknowledger: sends PUBACK/PUBREC for received QoS >= 1 messages once their
//! consumers have finished with them, in arrival order [MQTT-4.6.0-2].
//!
//! For each message the driver hands over two things: the waits for room in full route
//! queues (`room`), and the receiving end of the message's [`Delivery`] guard (`done`),
//! which reports when the last clone of the message was dropped. The acknowledger awaits
//! both, message after message — the waits for room in one task (which feeds the
//! consumers), the guards in a second (so a message can reach its route while the one
//! before it is still being handled) — then acknowledges — unless a consumer gave the
//! message up ([`Outcome::Abandoned`]), or the connection it arrived on has ended since
//! (its packet id may already name another message on the new connection; the broker
//! re-sends unacknowledged messages of a persistent session itself).
//!
//! A persistent session's QoS 2 messages are the exception to that last rule: once
//! handled they are recorded in the session's [`InboundState`] (on disk with a store)
//! before the PUBREC, and a PUBREC owed to a re-send that arrived on the current
//! connection is sent whatever connection the message first came on.
//!
//! While it waits, the driver keeps polling the connection: keep-alive flows, and the
//! broker's in-flight window, filled with unacknowledged messages, stops the flow.
//!
//! [`Delivery`]: crate::delivery::Delivery

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::inbound::InboundState;
use super::incoming::Pending;
use super::link::{AckToken, Client};
use crate::delivery::Outcome;

/// Acknowledgements that may wait for consumers (the broker's in-flight window bounds
/// this in practice; 65535 is the protocol's limit of packet ids).
const ACK_QUEUE: usize = 65_535;

/// Aborts a task when dropped (the feeding stage ends with the acknowledging one).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The acknowledger's two stages (see [`Acker::stages`]).
struct Stages {
    /// Into the feeding stage (jobs with a wait for room, and every job behind one).
    feed: mpsc::Sender<Job>,
    /// Into the acknowledging stage.
    ack: mpsc::Sender<Job>,
    task: tokio::task::JoinHandle<()>,
}

/// One message waiting for its acknowledgement.
struct Job {
    room: Option<Pending>,
    done: Option<oneshot::Receiver<Outcome>>,
    token: AckToken,
    connection: u64,
    /// A QoS 2 message of a persistent session (tracked in the `InboundState`).
    tracked: bool,
}

/// Sends the acknowledgements of one session (see the [module docs](self)).
pub(super) struct Acker {
    client: Client,
    /// A persistent session's incoming QoS 2 state.
    inbound: Option<Arc<InboundState>>,
    /// The two stages, started by the first acknowledgement that has to wait: a
    /// session that never receives QoS >= 1, or whose consumers are always done at once,
    /// never pays for them.
    stages: std::sync::OnceLock<Stages>,
    /// Jobs queued and not finished: while non-zero, no acknowledgement may overtake them.
    waiting: Arc<AtomicUsize>,
    /// Jobs in the feeding stage: while zero, a job with no wait for room goes straight to
    /// the acknowledging stage (every job before it is there already).
    feeding: Arc<AtomicUsize>,
    /// Number of the current connection.
    connection: Arc<AtomicU64>,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Acker {
    /// An acknowledger for `client` (its task starts when first needed); `inbound` is a
    /// persistent session's incoming QoS 2 state.
    pub(super) fn new(client: Client, inbound: Option<Arc<InboundState>>) -> Acker {
        Acker {
            client,
            inbound,
            stages: std::sync::OnceLock::new(),
            waiting: Arc::new(AtomicUsize::new(0)),
            feeding: Arc::new(AtomicUsize::new(0)),
            connection: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The stages, started on first use.
    fn stages(&self) -> &Stages {
        self.stages.get_or_init(|| {
            let (feed, mut rx) = mpsc::channel::<Job>(ACK_QUEUE);
            let in_feed = Arc::clone(&self.feeding);
            let (c, w, conn, inbound) = (
                self.client.clone(),
                Arc::clone(&self.waiting),
                Arc::clone(&self.connection),
                self.inbound.clone(),
            );
            // Two stages, each in arrival order: the first waits for room in full
            // route queues and so feeds the consumers; the second waits for them to
            // finish and acknowledges. Were they one loop, message k+1 would reach its
            // route only after message k was handled, and a backlog would drain one
            // message per round trip to the consumer.
            let (ack, mut feeding) = mpsc::channel::<Job>(ACK_QUEUE);
            let handed = ack.clone();
            let feeder = tokio::spawn(async move {
                while let Some(mut job) = rx.recv().await {
                    if let Some(room) = job.room.take() {
                        room.await;
                    }
                    if handed.send(job).await.is_err() {
                        break;
                    }
                    in_feed.fetch_sub(1, Ordering::AcqRel);
                }
            });
            let task = tokio::spawn(async move {
                let _feeder = AbortOnDrop(feeder);
                while let Some(job) = feeding.recv().await {
                    let outcome = match job.done {
                        // The guard always reports; a closed channel cannot happen.
                        Some(done) => done.await.unwrap_or(Outcome::Handled),
                        None => Outcome::Handled,
                    };
                    let mut owed = false;
                    if let (true, Some(inbound)) = (job.tracked, &inbound) {
                        match outcome {
                            Outcome::Handled => owed = inbound.handled(job.token.pkid).await,
                            Outcome::Abandoned => {
                                inbound.with(|s| s.on_abandoned(job.token.pkid));
                            }
                        }
                    }
                    if outcome == Outcome::Handled
                        && (owed || job.connection == conn.load(Ordering::Acquire))
                    {
                        let _ = c.ack(job.token).await;
                    } else {
                        tracing::trace!(
                            pkid = job.token.pkid,
                            ?outcome,
                            "message left unacknowledged"
                        );
                    }
                    w.fetch_sub(1, Ordering::AcqRel);
                }
            });
            Stages { feed, ack, task }
        })
    }

    /// A connection was established: acknowledgements still waiting for messages of
    /// earlier connections will not be sent.
    pub(super) fn new_connection(&self) {
        self.connection.fetch_add(1, Ordering::AcqRel);
    }

    /// Acknowledges `token` once `room` (if any) completed and `done` (if any) reported
    /// the message handled, after every message handed over before it.
    /// `tracked`: a QoS 2 message of a persistent session, recorded as handled (see the
    /// [module docs](self)) before its PUBREC; it always goes through the task.
    pub(super) fn ack(
        &self,
        room: Option<Pending>,
        mut done: Option<oneshot::Receiver<Outcome>>,
        token: AckToken,
        tracked: bool,
    ) {
        if !tracked && room.is_none() && self.waiting.load(Ordering::Acquire) == 0 {
            // Nothing ahead and nothing to wait for: acknowledge from the driver's task.
            let ready = match done.as_mut().map(oneshot::Receiver::try_recv) {
                None => Some(Outcome::Handled),
                Some(Ok(o)) => Some(o),
                Some(Err(_)) => None,
            };
            match ready {
                Some(Outcome::Abandoned) => return,
                Some(Outcome::Handled) => {
                    if self.client.ack_now(token).is_ok() {
                        return;
                    }
                    tracing::trace!(pkid = token.pkid, "request channel full, ack deferred");
                    // The outcome was taken from `done`: queue the acknowledgement alone.
                    done = None;
                }
                None => {}
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            room,
            done,
            token,
            connection: self.connection.load(Ordering::Acquire),
            tracked,
        };
        let stages = self.stages();
        // The driver is the only caller, so nothing enters the feeding stage meanwhile.
        let sent = if job.room.is_none() && self.feeding.load(Ordering::Acquire) == 0 {
            stages.ack.try_send(job)
        } else {
            self.feeding.fetch_add(1, Ordering::AcqRel);
            stages.feed.try_send(job).inspect_err(|_| {
                self.feeding.fetch_sub(1, Ordering::AcqRel);
            })
        };
        if let Err(e) = sent {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            tracing::error!(
                pkid = job.token.pkid,
                "acknowledgement queue full; message left unacknowledged for redelivery"
            );
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        if let Some(stages) = self.stages.get() {
            stages.task.abort();
        }
    }
}
