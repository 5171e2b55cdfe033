//! The acknowledger: sends PUBACK/PUBREC for received QoS >= 1 messages once their
//! consumers have finished with them, in arrival order [MQTT-4.6.0-2].
//!
//! For each message the driver hands over two things: the waits for room in full route
//! queues (`room`), and the receiving end of the message's [`AckGuard`] guard (`done`),
//! which reports when the last clone of the message was dropped. The acknowledger awaits
//! both, message after message — the waits for room in one task (which feeds the
//! consumers), the guards in a second (so a message can reach its route while the one
//! before it is still being handled) — then acknowledges — unless a consumer gave the
//! message up ([`Outcome::Abandoned`]), or the connection it arrived on has ended since
//! (its packet id may already name another message on the new connection; the broker
//! re-sends unacknowledged messages of a persistent session itself).
//!
//! A persistent session's QoS 2 messages are the exception to that last rule: once
//! handled they are recorded in the session's [`Qos2Received`] (on disk with a store)
//! before the PUBREC, and a PUBREC owed to a re-send that arrived on the current
//! connection is sent whatever connection the message first came on.
//!
//! While it waits, the driver keeps polling the connection: keep-alive flows, and the
//! broker's in-flight window, filled with unacknowledged messages, stops the flow.
//!
//! ## How acknowledgements reach the socket
//!
//! rumqttc writes every request of its client channel on its own (one `write` each), while
//! it answers a batch of incoming packets with one. On an MQTT 3.1.1 connection, whose
//! event loop lets us write, acknowledgements that are ready while the driver is between
//! two polls are written by the driver itself, all in one go ([`ReadyAcks`]): a burst of
//! messages handled together is acknowledged in one TCP segment, as rumqttc's automatic
//! acknowledgements would be. Only when the driver is waiting inside `poll` does an
//! acknowledgement go through the client channel (that wakes the event loop); those ready
//! behind it wait until rumqttc has written it, so the order holds. MQTT 5's event loop
//! keeps its socket private: there every acknowledgement takes the channel.
//!
//! [`AckGuard`]: crate::delivery::AckGuard

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::link::{Client, OwedAck};
use crate::delivery::Outcome;
use crate::session::incoming::RoomWait;
use crate::session::qos2_received::Qos2Received;

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
    feed: mpsc::Sender<Unacked>,
    /// Into the acknowledging stage.
    ack: mpsc::Sender<Unacked>,
    task: tokio::task::JoinHandle<()>,
}

/// One message waiting for its acknowledgement.
struct Unacked {
    room: Option<RoomWait>,
    done: Option<oneshot::Receiver<Outcome>>,
    token: OwedAck,
    connection: u64,
    /// A QoS 2 message of a persistent session (tracked in the `Qos2Received`).
    tracked: bool,
}

/// Acknowledgements ready to be written, and the way each goes out (see "How
/// acknowledgements reach the socket" in the [module docs](self)).
#[derive(Debug)]
pub(super) struct ReadyAcks {
    /// The driver may write acknowledgements itself (an MQTT 3.1.1 connection).
    direct: bool,
    /// The driver is waiting inside `poll`: an acknowledgement queued now would wait for
    /// the next packet, so it takes the channel (which wakes the event loop). Set under
    /// the lock (by `take`), cleared without it after every poll.
    polling: AtomicBool,
    inner: Mutex<ReadyInner>,
}

#[derive(Debug, Default)]
struct ReadyInner {
    /// Ready, in arrival order, for the driver to write before it polls again.
    tokens: VecDeque<OwedAck>,
    /// Sent through rumqttc's client channel and not yet reported written: nothing may
    /// be written directly before they are.
    in_channel: usize,
}

impl ReadyAcks {
    fn new(direct: bool) -> ReadyAcks {
        ReadyAcks {
            direct,
            polling: AtomicBool::new(false),
            inner: Mutex::new(ReadyInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyInner> {
        // Nothing panics while holding the lock; a poisoned one still holds valid state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An acknowledgement is ready (called by the acknowledging stage). Returns true
    /// when the caller must send it through the client channel; otherwise it is queued
    /// for the driver.
    fn offer(&self, t: OwedAck) -> bool {
        if !self.direct {
            return true;
        }
        let mut g = self.lock();
        if self.polling.load(Ordering::Acquire) && g.tokens.is_empty() && g.in_channel == 0 {
            g.in_channel += 1;
            true
        } else {
            g.tokens.push_back(t);
            false
        }
    }

    /// Queues an acknowledgement from the driver's own task (it is between two polls).
    /// False when the connection takes no direct writes: send it through the channel.
    fn push(&self, t: OwedAck) -> bool {
        if self.direct {
            self.lock().tokens.push_back(t);
        }
        self.direct
    }

    /// Moves the acknowledgements the driver may write now into `out`. When there are
    /// none, the driver is taken to poll next (until [`ReadyAcks::polled`]).
    pub(super) fn take(&self, out: &mut Vec<OwedAck>) {
        if !self.direct {
            return;
        }
        let mut g = self.lock();
        if g.in_channel == 0 && !g.tokens.is_empty() {
            out.extend(g.tokens.drain(..));
        } else {
            self.polling.store(true, Ordering::Release);
        }
    }

    /// The driver's `poll` returned.
    pub(super) fn polled(&self) {
        self.polling.store(false, Ordering::Release);
    }

    /// rumqttc wrote an acknowledgement that came through the channel.
    pub(super) fn written_from_channel(&self) {
        let mut g = self.lock();
        g.in_channel = g.in_channel.saturating_sub(1);
    }

    /// A new connection: what was queued belongs to the old one.
    fn clear(&self) {
        let mut g = self.lock();
        g.tokens.clear();
        g.in_channel = 0;
        self.polling.store(false, Ordering::Release);
    }
}

/// Sends the acknowledgements of one session (see the [module docs](self)).
pub(super) struct Acker {
    client: Client,
    /// A persistent session's incoming QoS 2 state.
    inbound: Option<Arc<Qos2Received>>,
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
    /// Acknowledgements ready for the driver to write.
    ready: Arc<ReadyAcks>,
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
    /// persistent session's incoming QoS 2 state; `direct`: the driver may write
    /// acknowledgements itself (see [`ReadyAcks`]).
    pub(super) fn new(client: Client, inbound: Option<Arc<Qos2Received>>, direct: bool) -> Acker {
        Acker {
            ready: Arc::new(ReadyAcks::new(direct)),
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
            let (feed, mut rx) = mpsc::channel::<Unacked>(ACK_QUEUE);
            let in_feed = Arc::clone(&self.feeding);
            let (c, w, conn, inbound, ready) = (
                self.client.clone(),
                Arc::clone(&self.waiting),
                Arc::clone(&self.connection),
                self.inbound.clone(),
                Arc::clone(&self.ready),
            );
            // Two stages, each in arrival order: the first waits for room in full
            // route queues and so feeds the consumers; the second waits for them to
            // finish and acknowledges. Were they one loop, message k+1 would reach its
            // route only after message k was handled, and a backlog would drain one
            // message per round trip to the consumer.
            let (ack, mut feeding) = mpsc::channel::<Unacked>(ACK_QUEUE);
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
                        if ready.offer(job.token) {
                            let _ = c.ack(job.token).await;
                        }
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
        self.ready.clear();
    }

    /// The acknowledgements ready for the driver to write.
    pub(super) fn ready(&self) -> &ReadyAcks {
        &self.ready
    }

    /// Acknowledges `token` once `room` (if any) completed and `done` (if any) reported
    /// the message handled, after every message handed over before it.
    /// `tracked`: a QoS 2 message of a persistent session, recorded as handled (see the
    /// [module docs](self)) before its PUBREC; it always goes through the task.
    pub(super) fn ack(
        &self,
        room: Option<RoomWait>,
        mut done: Option<oneshot::Receiver<Outcome>>,
        token: OwedAck,
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
                    if self.ready.push(token) || self.client.ack_now(token).is_ok() {
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
        let job = Unacked {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::QoS;

    fn t(pkid: u16) -> OwedAck {
        OwedAck {
            qos: QoS::AtLeastOnce,
            pkid,
        }
    }

    fn taken(r: &ReadyAcks) -> Vec<u16> {
        let mut out = Vec::new();
        r.take(&mut out);
        out.iter().map(|t| t.pkid).collect()
    }

    #[test]
    fn between_polls_acknowledgements_wait_for_the_driver_and_go_out_together() {
        let r = ReadyAcks::new(true);
        assert!(!r.offer(t(1)));
        assert!(r.push(t(2)));
        assert!(!r.offer(t(3)));
        assert_eq!(taken(&r), [1, 2, 3]);
        // Nothing left: the driver polls next.
        assert!(taken(&r).is_empty());
    }

    #[test]
    fn while_polling_the_first_takes_the_channel_and_the_rest_wait_until_it_is_written() {
        let r = ReadyAcks::new(true);
        assert!(taken(&r).is_empty()); // the driver polls
        assert!(r.offer(t(1)), "the first one wakes the event loop");
        assert!(!r.offer(t(2)), "behind one in the channel: queued");
        assert!(!r.offer(t(3)));
        r.polled();
        assert!(
            taken(&r).is_empty(),
            "not before rumqttc wrote the one in the channel"
        );
        r.polled();
        r.written_from_channel();
        assert_eq!(taken(&r), [2, 3]);
    }

    #[test]
    fn without_direct_writes_everything_takes_the_channel() {
        let r = ReadyAcks::new(false);
        assert!(r.offer(t(1)));
        assert!(!r.push(t(2)));
        assert!(taken(&r).is_empty());
    }

    #[test]
    fn a_new_connection_forgets_what_was_queued_for_the_old_one() {
        let r = ReadyAcks::new(true);
        assert!(taken(&r).is_empty());
        assert!(r.offer(t(1)));
        assert!(!r.offer(t(2)));
        r.clear();
        assert!(
            !r.offer(t(3)),
            "not polling after a reconnect until the driver says so"
        );
        assert_eq!(taken(&r), [3]);
    }
}
