//! [`SessionHandle`]: a cheap, cloneable view of one session.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Recipient};
use tokio::sync::watch;

use super::handlers::PublishWith;
use super::lane::{PublishLane, ReportTo, Reporter, Submitted};
use super::state::SessionState;
use super::{DirectSubscription, SessionActor, SessionStatus, Waiter};
use crate::error::Error;
use crate::message::SubscribeOptions;
use crate::message::{Publish, QoS};
use crate::metrics::counters::{SessionCounters, SessionMetrics};
use crate::options::SessionOptions;
use crate::router::dispatch::SessionSinks;
use crate::router::route::{Listener, Overflow};
use crate::topic::{validate_topic_name, TopicFilter};

/// A handle on one session: state, metrics, publish, subscribe, messages.
///
/// Reads (`state`, `status`, `metrics`) touch no actor; `publish` and `subscribe` send one
/// message to the session's actor. After the session is removed, calls return
/// [`Error::SessionClosed`].
#[derive(Clone)]
pub struct SessionHandle {
    pub(crate) name: Arc<str>,
    pub(crate) addr: Addr<SessionActor>,
    pub(crate) status: watch::Receiver<SessionStatus>,
    pub(crate) counters: Arc<SessionCounters>,
    pub(crate) opts: Arc<SessionOptions>,
    pub(crate) sinks: Arc<SessionSinks>,
    /// The manager's worker the session runs on.
    pub(crate) worker: usize,
    /// That worker's arbiter.
    pub(crate) arbiter: actix::ArbiterHandle,
    /// The router, owner of the session's subscriptions.
    pub(crate) router: Recipient<DirectSubscription>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// The index of the manager's worker thread this session runs on (see
    /// [`SessionManagerBuilder::workers`](crate::SessionManagerBuilder::workers)).
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The actix arbiter of the worker thread this session runs on. What runs there
    /// talks to the session without a thread crossing: an actor started with
    /// `Actor::start_in_arbiter(&handle.arbiter(), ..)`, or a task spawned with
    /// `handle.arbiter().spawn_fn(..)`, that publishes into the session (request /
    /// response, echo, forwarding) hands each publish over on its own thread.
    ///
    /// ```no_run
    /// # fn f(handle: mqtt_sessions::SessionHandle) {
    /// use mqtt_sessions::Publish;
    ///
    /// let on_worker = handle.clone();
    /// handle.arbiter().spawn_fn(move || {
    ///     actix::spawn(async move {
    ///         // Runs on the session's own worker thread.
    ///         let _ = on_worker.publish(Publish::new("echo/ready", "1")).await;
    ///     });
    /// });
    /// # }
    /// ```
    pub fn arbiter(&self) -> actix::ArbiterHandle {
        self.arbiter.clone()
    }

    /// The name of the thread that runs the session's connection, once it has started
    /// (diagnostics: the worker arbiters are named by actix).
    pub fn driver_thread(&self) -> Option<String> {
        self.counters.driver_thread.get().cloned()
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection state.
    pub fn state(&self) -> SessionState {
        self.status.borrow().state
    }

    /// Connected with every subscription restored.
    pub fn is_ready(&self) -> bool {
        self.status.borrow().ready
    }

    /// The full status (state, readiness, broker, last error, ...).
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// The session's counters, rates and connection figures as plain numbers.
    pub fn metrics(&self) -> SessionMetrics {
        let status = self.status.borrow().clone();
        self.counters.snapshot_with(&status, self.sinks.dropped())
    }

    /// The session's live counters (read by the metrics collector at scrape time).
    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// The options the session runs with.
    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// The session actor's address, for applications that talk to it directly.
    pub fn addr(&self) -> &Addr<SessionActor> {
        &self.addr
    }

    /// Publishes and waits for completion: QoS 0 once written to the connection, QoS 1/2
    /// once the broker acknowledged it (PUBACK / PUBCOMP), with or without a store — so
    /// the broker's refusals reach the caller. With a store, a QoS >= 1 publish is
    /// written to the store's outbox (and replayed after a crash): a QoS 2 one, or any
    /// of a persistent session (`clean_session = false`), before it is sent; a QoS 1 one
    /// of a clean session while it is sent, so the disk adds nothing to its latency.
    /// QoS >= 1 publishes made while disconnected wait in the outbox (bounded by
    /// `max_pending_messages`) and are sent after the next connect. To return as soon as
    /// the message is accepted, use [`enqueue`](Self::enqueue).
    ///
    /// Errors: [`Error::Topic`], [`Error::PayloadTooLarge`], [`Error::NotConnected`]
    /// (QoS 0 while disconnected), [`Error::QueueFull`], [`Error::PublishTimeout`]
    /// (the message stays queued and is still delivered), [`Error::PublishRefused`] and
    /// [`Error::PacketTooLarge`] (MQTT 5 broker limits and reason codes),
    /// [`Error::StoreWrite`], [`Error::SessionGaveUp`], [`Error::SessionClosed`].
    pub async fn publish(&self, publish: Publish) -> Result<(), Error> {
        self.check_publish(&publish)?;
        self.hand_over(publish, false).await
    }

    /// Queues a publish and returns once it is accepted: for QoS >= 1 with a store, once
    /// it is written to the store's outbox (it survives a crash); otherwise once it is in
    /// the session's outbox. The same refusals as [`publish`](Self::publish) that need no
    /// broker are returned here; a failure after acceptance (refused by the broker, too
    /// large for it, timed out) is a `publish_failed` event and counts in
    /// `publish_failures_total`.
    pub async fn enqueue(&self, publish: Publish) -> Result<(), Error> {
        self.check_publish(&publish)?;
        self.hand_over(publish, true).await
    }

    /// Hands a publish to the actor with an answer channel of our own, and awaits the
    /// answer. A full mailbox is waited on (its bound holds); a gone actor, or one that
    /// drops the answer, is [`Error::SessionClosed`].
    async fn hand_over(&self, publish: Publish, enqueue: bool) -> Result<(), Error> {
        let (answer, rx) = tokio::sync::oneshot::channel();
        let closed = || Error::SessionClosed(self.name.to_string());
        if !self
            .deliver(PublishWith::answering(publish, answer, enqueue))
            .await
        {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Puts a publish in the actor's mailbox, waiting while it is full (its bound holds;
    /// calls awaited one after another keep their order). False when the actor is gone.
    async fn deliver(&self, msg: PublishWith) -> bool {
        match self.addr.try_send(msg) {
            Ok(()) => true,
            Err(actix::dev::SendError::Full(msg)) => self.addr.send(msg).await.is_ok(),
            Err(actix::dev::SendError::Closed(_)) => false,
        }
    }

    /// Submits a publish through an ordered [`PublishLane`] and returns once it is in the
    /// session's mailbox (a full mailbox is waited on), so that publishes submitted one
    /// after another reach the session in that order. The returned [`Submitted`] tells
    /// when the session accepted it (queued; with a store and QoS >= 1, written to the
    /// store's outbox) and when the broker acknowledged it. A refusal that may pass
    /// ([`Error::QueueFull`], a closing session) holds the lane: see [`PublishLane`].
    ///
    /// Errors here: [`Error::Topic`], [`Error::PayloadTooLarge`] (checked before it is
    /// handed over), [`Error::SessionClosed`] (the session is gone; the lane is held).
    pub async fn submit(&self, lane: &PublishLane, publish: Publish) -> Result<Submitted, Error> {
        self.check_publish(&publish)?;
        let (submitted, accepted, done) = Submitted::new(Arc::clone(&self.name));
        let (accepted, done) = (Waiter::Caller(accepted), Waiter::Caller(done));
        if self.deliver_through(lane, publish, accepted, done).await {
            Ok(submitted)
        } else {
            Err(Error::SessionClosed(self.name.to_string()))
        }
    }

    /// [`submit`](Self::submit) for a caller with many publishes in flight: the two
    /// answers of this publish (accepted, acknowledged) come as [`Report`]s tagged `tag`
    /// on `reporter`'s channel (see [`reports`](crate::session::lane::reports)) instead
    /// of a [`Submitted`] to await. Returns once the publish is in the session's mailbox
    /// (a full mailbox is waited on), as `submit` does.
    ///
    /// Errors here, with no report: [`Error::Topic`], [`Error::PayloadTooLarge`] (checked
    /// before anything is handed over). Otherwise the publish gets exactly two reports,
    /// also when the session is gone or goes away ([`Error::SessionClosed`]; the lane is
    /// then held, as by any refusal that may pass).
    ///
    /// [`Report`]: crate::session::lane::Report
    pub async fn submit_reporting(
        &self,
        lane: &PublishLane,
        publish: Publish,
        reporter: &Reporter,
        tag: u64,
    ) -> Result<(), Error> {
        self.check_publish(&publish)?;
        let (accepted, done) = ReportTo::pair(reporter, tag, &self.name);
        // When the session is gone, the answers dropped with the message report it.
        let (accepted, done) = (Waiter::Report(accepted), Waiter::Report(done));
        self.deliver_through(lane, publish, accepted, done).await;
        Ok(())
    }

    /// Puts a publish of `lane` in the mailbox with its two answers; false (and the lane
    /// held, as by a refusal that may pass) when the actor is gone.
    async fn deliver_through(
        &self,
        lane: &PublishLane,
        publish: Publish,
        accepted: Waiter,
        done: Waiter,
    ) -> bool {
        let msg = PublishWith {
            publish,
            accepted: Some(accepted),
            done: Some(done),
            lane: Some(lane.ticket()),
        };
        let delivered = self.deliver(msg).await;
        if !delivered {
            lane.hold();
        }
        delivered
    }

    pub(crate) fn check_publish(&self, publish: &Publish) -> Result<(), Error> {
        validate_topic_name(&publish.topic)?;
        let max = self.opts.performance.max_message_size;
        if publish.payload.len() > max {
            return Err(Error::PayloadTooLarge {
                session: self.name.to_string(),
                size: publish.payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Subscribes the session to `filter` at `qos`. The subscription is kept and re-sent
    /// after reconnects; while connected this waits for the SUBACK.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), Error> {
        self.direct(filter, Some((qos, SubscribeOptions::default())))
            .await
    }

    /// Withdraws the subscription made with [`subscribe`](Self::subscribe). The session
    /// stays subscribed while a route still needs the filter.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), Error> {
        self.direct(filter, None).await
    }

    async fn direct(
        &self,
        filter: &str,
        want: Option<(QoS, SubscribeOptions)>,
    ) -> Result<(), Error> {
        let filter = TopicFilter::new(filter)?;
        self.router
            .send(DirectSubscription {
                session: Arc::clone(&self.name),
                filter,
                want,
            })
            .await
            .map_err(|_| Error::SessionClosed(self.name.to_string()))?
    }

    /// A receiver of every message this session receives, whatever routes there are,
    /// bounded by `performance.message_channel_size`. When it is full, QoS 0 messages are
    /// dropped (counted; [`Overflow::DropNewest`]) and QoS >= 1 messages wait for room. A
    /// QoS >= 1 message is acknowledged to the broker once the application has dropped it
    /// (and every other consumer is done with it). It is a [`Listener`] like a route's:
    /// drop it (or [`close`](Listener::close) it) to stop; what it still queued is left
    /// unacknowledged.
    ///
    /// ```no_run
    /// # async fn f(session: mqtt_sessions::SessionHandle) {
    /// let messages = session.messages();
    /// while let Some(m) = messages.recv().await {
    ///     println!("{}: {} bytes", m.topic, m.payload.len());
    /// }
    /// # }
    /// ```
    pub fn messages(&self) -> Listener {
        self.messages_with(
            self.opts.performance.message_channel_size,
            Overflow::DropNewest,
        )
    }

    /// [`messages`](Self::messages) with its own queue size and overflow policy (as a
    /// route's: [`Overflow::Backpressure`] pauses the session's reading, bounded by
    /// `performance.max_stall`). The size is taken within 1..=1,000,000, a route's
    /// bounds: a value outside is brought to the nearer bound, and a warning says so.
    pub fn messages_with(&self, capacity: usize, overflow: Overflow) -> Listener {
        self.sinks.add(&self.name, capacity, overflow)
    }

    /// QoS 0 messages dropped because a [`messages`](Self::messages) receiver was full.
    pub fn dropped_messages(&self) -> u64 {
        self.sinks.dropped()
    }

    /// Waits until the session is ready (connected, subscriptions restored).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.status.clone();
        let res = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| {
                s.ready || s.state == SessionState::Closed || s.state == SessionState::GaveUp
            }),
        )
        .await;
        match res {
            Ok(Ok(s)) if s.ready => Ok(()),
            Ok(Ok(s)) if s.gave_up.is_some() => Err(Error::SessionGaveUp {
                session: self.name.to_string(),
                reason: s
                    .gave_up
                    .clone()
                    .unwrap_or(crate::event::GiveUpReason::ConnectionLost { error: None }),
            }),
            Ok(_) => Err(Error::SessionClosed(self.name.to_string())),
            Err(_) => Err(Error::WaitTimeout {
                timeout,
                not_ready: vec![self.name.to_string()],
            }),
        }
    }
}
