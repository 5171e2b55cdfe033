//! The driver: the task that owns a session's rumqttc event loop (through [`Link`]).
//!
//! It speaks MQTT 3.1.1 or MQTT 5 through the protocol-neutral [`Link`].
//! It only ever awaits `EventLoop::poll` (plus, while connected, a read-timeout timer), so
//! keep-alive keeps flowing whatever the application does. It
//! - walks the broker list on every connection attempt and sleeps the backoff in between;
//! - hands incoming PUBLISHes straight to the session's [`Dispatcher`] (no actor hop) and
//!   acknowledges QoS >= 1 messages once every consumer has finished with them (through
//!   the `Acker` (`super::ack`), which keeps the acknowledgements in arrival order
//!   [MQTT-4.6.0-2]);
//! - reports everything else to its [`SessionActor`](crate::session::SessionActor) as
//!   [`DriverEvent`]s, in order, through a bounded channel.
//!
//! After a connection ends it empties rumqttc's own retransmission queue and state: the
//! actor's outbox is the single owner of unacknowledged publishes. On a persistent
//! session, each CONNACK is followed by a hand-over before the first `poll`: the actor
//! answers `Connected { resume }` with what its outbox re-sends (same packet id with DUP,
//! or PUBREL; nothing when the broker kept no session), which the driver queues in
//! rumqttc ahead of everything, and the driver tells rumqttc which incoming QoS 2 ids
//! still expect a PUBREL ([`Qos2Received`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::ack::Acker;
use super::link::{
    BrokerAck, BrokerLimits, Client, IncomingPublish, Link, LinkError, LinkEvent, OwedAck, Written,
};
use crate::delivery::AckGuard;
use crate::event::{ConnectionFailure, ErrorKind};
use crate::message::{Message, QoS};
use crate::metrics::counters::SessionCounters;
use crate::options::{BrokerUrl, SessionOptions};
use crate::session::incoming::{Dispatcher, RoomWait};
use crate::session::outbox::Resend;
use crate::session::qos2_received::{Qos2Action, Qos2Received};

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// What the driver tells its actor.
#[derive(Debug)]
pub(crate) enum DriverEvent {
    /// Attempt `attempt` tries broker number `broker`.
    Attempt {
        /// Index into the session's broker list.
        broker: usize,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// One broker of an attempt failed.
    AttemptFailed(ConnectionFailure),
    /// All brokers failed; the next attempt starts after `delay`.
    Waiting {
        /// The next attempt's number.
        attempt: u32,
        /// The backoff delay.
        delay: Duration,
    },
    /// No more attempts: `attempts` failed in a row (`reconnect.max_attempts`), or the
    /// connection was lost without auto-reconnect (`lost`).
    GaveUp {
        /// Attempts made (0 when `lost`).
        attempts: u32,
        /// The connection was lost and auto-reconnect is off.
        lost: bool,
    },
    /// CONNACK received.
    Connected {
        /// Index into the broker list.
        broker: usize,
        /// The broker kept a session for this client id.
        session_present: bool,
        /// The client id the broker assigned (MQTT 5, when the client id was empty).
        assigned_client_id: Option<String>,
        /// The broker's limits from its CONNACK (MQTT 5).
        limits: BrokerLimits,
        /// A persistent session: the driver waits for what to re-send first (empty when
        /// the broker kept no session) before it polls the new connection.
        resume: Option<tokio::sync::oneshot::Sender<Vec<Resend>>>,
    },
    /// The connection ended.
    Lost {
        /// Why.
        failure: ConnectionFailure,
        /// Our QoS >= 1 publish requests that rumqttc had not processed yet and dropped.
        drained_qos1: usize,
        /// Our QoS 0 publish requests dropped the same way.
        drained_qos0: usize,
        /// SUBSCRIBE requests dropped the same way.
        drained_subs: usize,
    },
    /// rumqttc processed an outgoing request.
    Written(Written),
    /// The broker acknowledged one of our publishes or subscribes.
    Ack(BrokerAck),
}

/// What a driver is started with (the actor's side of it).
pub(crate) struct DriverSetup {
    /// The session's name.
    pub session: Arc<str>,
    /// Its options.
    pub opts: Arc<SessionOptions>,
    /// Its brokers.
    pub brokers: Arc<[BrokerUrl]>,
    /// The connection's event-loop side.
    pub link: Link,
    /// The connection's request side (for acknowledgements).
    pub client: Client,
    /// Where the driver reports to the actor.
    pub events: flume::Sender<DriverEvent>,
    /// Where incoming messages go.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// The session's counters.
    pub counters: Arc<SessionCounters>,
    /// Delay before the very first attempt (set when the supervisor restarts the actor).
    pub initial_delay: Option<Duration>,
    /// Bounds the connection attempts in flight across the manager (a broker's accept
    /// queue is finite: mosquitto's listen backlog is 100).
    pub connect_limit: Arc<tokio::sync::Semaphore>,
    /// A persistent session's incoming QoS 2 state (`None` with a clean session).
    pub inbound: Option<Arc<Qos2Received>>,
}

/// Everything the driver task needs.
pub(crate) struct Driver {
    session: Arc<str>,
    opts: Arc<SessionOptions>,
    brokers: Arc<[BrokerUrl]>,
    link: Link,
    client: Client,
    events: flume::Sender<DriverEvent>,
    dispatcher: Arc<dyn Dispatcher>,
    counters: Arc<SessionCounters>,
    initial_delay: Option<Duration>,
    connect_limit: Arc<tokio::sync::Semaphore>,
    /// When the last packet went out on this connection (the broker's keep-alive clock).
    last_out: Instant,
    inbound: Option<Arc<Qos2Received>>,
    /// Acknowledgements taken from the acknowledger to write (kept for its allocation).
    ack_batch: Vec<OwedAck>,
}

impl Driver {
    /// A driver, not yet running.
    pub(crate) fn new(s: DriverSetup) -> Self {
        Driver {
            session: s.session,
            opts: s.opts,
            brokers: s.brokers,
            link: s.link,
            client: s.client,
            events: s.events,
            dispatcher: s.dispatcher,
            counters: s.counters,
            initial_delay: s.initial_delay,
            connect_limit: s.connect_limit,
            last_out: Instant::now(),
            inbound: s.inbound,
            ack_batch: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Runs until the connection is given up; the actor aborts the task to stop it sooner.
    pub(crate) async fn run(mut self) {
        let thread = std::thread::current();
        let _ = self.counters.driver_thread.set(
            thread
                .name()
                .map_or_else(|| format!("{:?}", thread.id()), str::to_string),
        );
        let acker = Acker::new(
            self.client.clone(),
            self.inbound.clone(),
            self.link.writes_acks(),
        );
        let mut backoff = self.opts.reconnect.backoff();
        let mut attempt: u32 = 0;
        let mut delay = self.initial_delay.take();
        loop {
            if let Some(d) = delay.take() {
                tokio::time::sleep(d).await;
            }
            attempt += 1;
            let mut connected = None;
            for i in 0..self.brokers.len() {
                self.report(DriverEvent::Attempt { broker: i, attempt })
                    .await;
                self.counters
                    .connection_attempts
                    .fetch_add(1, Ordering::Relaxed);
                // Held until CONNACK or failure; the semaphore is never closed.
                let permit = Arc::clone(&self.connect_limit).acquire_owned().await.ok();
                let polled = self.link.connect(i).await;
                drop(permit);
                match polled {
                    Ok(ack) => {
                        connected = Some((i, ack));
                        break;
                    }
                    Err(e) => {
                        let failure = e.classify(&self.brokers[i]);
                        self.report(DriverEvent::AttemptFailed(failure)).await;
                    }
                }
            }
            match connected {
                Some((broker, ack)) => {
                    if let Some(id) = &ack.assigned_client_id {
                        // Reconnects resume the same broker session.
                        self.link.set_client_id(id);
                    }
                    acker.new_connection();
                    let (resume, resends) = match self.inbound {
                        Some(_) => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            (Some(tx), Some(rx))
                        }
                        None => (None, None),
                    };
                    self.report(DriverEvent::Connected {
                        broker,
                        session_present: ack.session_present,
                        assigned_client_id: ack.assigned_client_id,
                        limits: ack.limits,
                        resume,
                    })
                    .await;
                    if let Some(rx) = resends {
                        self.resume(ack.session_present, rx).await;
                    }
                    let since = Instant::now();
                    let lost = self.run_connected(broker, &acker).await;
                    self.report(lost).await;
                    if !self.opts.connect.auto_reconnect {
                        self.report(DriverEvent::GaveUp {
                            attempts: 0,
                            lost: true,
                        })
                        .await;
                        return;
                    }
                    if since.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    attempt = 0;
                }
                None => {
                    if self
                        .opts
                        .reconnect
                        .max_attempts
                        .is_some_and(|m| attempt >= m)
                    {
                        self.report(DriverEvent::GaveUp {
                            attempts: attempt,
                            lost: false,
                        })
                        .await;
                        return;
                    }
                }
            }
            let d = backoff.next_delay(fastrand::f64());
            self.report(DriverEvent::Waiting {
                attempt: attempt + 1,
                delay: d,
            })
            .await;
            delay = Some(d);
        }
    }

    /// A persistent session's hand-over after a CONNACK (see the [module docs](self)).
    async fn resume(
        &mut self,
        session_present: bool,
        resends: tokio::sync::oneshot::Receiver<Vec<Resend>>,
    ) {
        // The actor answers as soon as it handles `Connected`; it only drops the sender
        // when it is stopping (and then aborts this task).
        let items = resends.await.unwrap_or_default();
        if session_present && !items.is_empty() {
            let count = items.len();
            let max = super::link::packet_id_window(&self.opts);
            let skipped = self.link.resend(items, max);
            if !skipped.is_empty() {
                tracing::warn!(session = %self.session, ?skipped,
                    "packet ids outside the in-flight window not re-sent");
            }
            tracing::info!(session = %self.session, count, "resuming in-flight publishes with their packet ids");
        }
        if let Some(inbound) = &self.inbound {
            let ids = inbound.connected(session_present);
            if !ids.is_empty() {
                tracing::debug!(session = %self.session, count = ids.len(), "expecting PUBREL for handled QoS 2 messages");
                self.link.expect_pubrel(&ids);
            }
        }
    }

    /// rumqttc processed one of our requests: PUBCOMP ends an incoming QoS 2 message.
    /// The actor hears of what concerns its outbox and subscriptions, and of an
    /// acknowledgement that took the client channel on MQTT 5 (where they all do, and each
    /// frees a slot a waiting publish may need); on MQTT 3.1.1 an acknowledgement takes
    /// the channel only while nothing else is in flight, so it is not worth a message.
    async fn on_written(&mut self, out: Written, acker: &Acker) {
        self.last_out = Instant::now();
        match &out {
            Written::PubComp(pkid) => {
                if let Some(inbound) = &self.inbound {
                    inbound.released(*pkid);
                }
                return;
            }
            Written::PubAck(_) | Written::PubRec(_) => {
                acker.ready().written_from_channel();
                if self.link.writes_acks() {
                    return;
                }
            }
            Written::PingReq | Written::PingResp => return,
            _ => {}
        }
        self.report(DriverEvent::Written(out)).await;
    }

    /// Writes the acknowledgements that are ready, in one go, before the next poll (see
    /// the `ack` module's docs).
    async fn write_acks(&mut self, acker: &Acker) -> Result<(), LinkError> {
        loop {
            self.ack_batch.clear();
            acker.ready().take(&mut self.ack_batch);
            if self.ack_batch.is_empty() {
                return Ok(());
            }
            self.link.write_acks(&self.ack_batch).await?;
            self.last_out = Instant::now();
        }
    }

    async fn report(&self, ev: DriverEvent) {
        // The actor only stops listening when it is stopping, and then aborts this task.
        let _ = self.events.send_async(ev).await;
    }

    fn failure(&self, broker: usize, kind: ErrorKind, message: String) -> ConnectionFailure {
        ConnectionFailure {
            kind,
            broker: self.brokers[broker].url.clone(),
            message,
            reason: None,
        }
    }

    /// Polls an established connection until it ends; returns the `Lost` event.
    async fn run_connected(&mut self, broker: usize, acker: &Acker) -> DriverEvent {
        let read_timeout = self.opts.effective_read_timeout();
        let far = Duration::from_secs(86_400 * 365);
        let rt = read_timeout.unwrap_or(far);
        let mut last_in = Instant::now();
        self.last_out = last_in;
        let sleep = tokio::time::sleep(rt);
        tokio::pin!(sleep);
        let failure = loop {
            // While `poll` still holds events of its last read it returns them without
            // I/O: the read's time stands for all of them, and acknowledgements wait for
            // the last, so that a burst of messages is acknowledged in one write (as
            // rumqttc's automatic acknowledgements are), not one write each.
            let buffered = self.link.has_buffered();
            if !buffered {
                // Keep the timer's deadline within [last_in + 3/4 rt, last_in + rt]
                // without resetting it for every packet.
                let want = last_in + rt;
                if want > sleep.deadline().into_std() + rt / 4 {
                    sleep.as_mut().reset(want.into());
                }
                if let Err(e) = self.write_acks(acker).await {
                    break e.classify(&self.brokers[broker]);
                }
            }
            let polled = tokio::select! {
                biased;
                r = self.link.poll() => Some(r),
                _ = &mut sleep, if read_timeout.is_some() => None,
            };
            acker.ready().polled();
            match polled {
                Some(Ok(LinkEvent::Written(out))) => self.on_written(out, acker).await,
                Some(Ok(ev)) => {
                    if !buffered {
                        last_in = Instant::now();
                    }
                    self.on_incoming(ev, acker).await;
                }
                Some(Err(e)) => break e.classify(&self.brokers[broker]),
                None => {
                    // The poll future was dropped mid-way: the connection is declared dead.
                    self.link.abandon();
                    break self.failure(
                        broker,
                        ErrorKind::Timeout,
                        format!("nothing received for {rt:?} (read timeout)"),
                    );
                }
            }
        };
        // Events rumqttc had already buffered still count: acks and messages read, and
        // publishes it wrote (or tried to) before the failure, so that the actor's outbox
        // knows their packet ids.
        while let Some(ev) = self.link.buffered() {
            match ev {
                LinkEvent::Written(out) => self.on_written(out, acker).await,
                ev => self.on_incoming(ev, acker).await,
            }
        }
        let drained = self.link.reset(self.opts.performance.inflight);
        DriverEvent::Lost {
            failure,
            drained_qos1: drained.qos1,
            drained_qos0: drained.qos0,
            drained_subs: drained.subs,
        }
    }

    async fn on_incoming(&mut self, ev: LinkEvent, acker: &Acker) {
        match ev {
            LinkEvent::Publish(p) => {
                if let Some(stall) = self.on_publish(p, acker) {
                    // A full `Backpressure` route: stop reading (the broker holds the
                    // messages) until it has room, for at most `max_stall` — the future
                    // ends by itself then, well before the keep-alive lapses.
                    stall.await;
                }
            }
            LinkEvent::Ack(ack) => self.report(DriverEvent::Ack(ack)).await,
            LinkEvent::Written(out) => self.on_written(out, acker).await,
            LinkEvent::Other => {}
        }
    }

    /// How long a full `Backpressure` route may stop this connection's reading now:
    /// `max_stall`, and never past one keep-alive after the last packet we sent, so that
    /// the ping rumqttc owes is sent well within the broker's 1.5 × keep-alive.
    fn stall_budget(&self) -> Duration {
        let max = self.opts.effective_max_stall();
        let ka = self.opts.connect.keep_alive;
        if ka.is_zero() {
            return max;
        }
        max.min(ka.saturating_sub(self.last_out.elapsed()))
    }

    /// Hands a received PUBLISH to its consumers. Returns the pause a full
    /// `Backpressure` route asks for (QoS 0), to await before reading on.
    fn on_publish(&mut self, p: IncomingPublish, acker: &Acker) -> Option<RoomWait> {
        let c = &self.counters;
        let qos = p.qos;
        let token = OwedAck { qos, pkid: p.pkid };
        if p.payload.len() > self.opts.performance.max_message_size {
            // Per-message: only the first drop is a warning, the rest are counted
            // (dropped_messages_total{reason="oversized"}) and traced.
            if c.dropped_oversized.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    session = %self.session,
                    size = p.payload.len(),
                    max = self.opts.performance.max_message_size,
                    "incoming message larger than max_message_size dropped (further drops are counted and traced)"
                );
            } else {
                tracing::trace!(
                    session = %self.session,
                    size = p.payload.len(),
                    "incoming message larger than max_message_size dropped"
                );
            }
            if qos != QoS::AtMostOnce {
                acker.ack(None, None, token, false);
            }
            return None;
        }
        // A persistent session's QoS 2: a re-send of a message that already reached the
        // routes is acknowledged, not delivered again.
        let tracked = match (&self.inbound, qos) {
            (Some(inbound), QoS::ExactlyOnce) => {
                match inbound.with(|s| s.on_publish(p.pkid, p.dup)) {
                    Qos2Action::Deliver => true,
                    Qos2Action::AckNow => {
                        tracing::debug!(session = %self.session, pkid = p.pkid, "re-sent QoS 2 message already handled: PUBREC only");
                        acker.ack(None, None, token, false);
                        return None;
                    }
                    Qos2Action::AckWhenHandled => {
                        tracing::debug!(session = %self.session, pkid = p.pkid, "re-sent QoS 2 message still being handled");
                        return None;
                    }
                }
            }
            _ => false,
        };
        // One clock read per message: the receive time stamps the message, the session's
        // last-message time and each route's (benches/matching.rs, docs/BENCHMARKS.md).
        let received_at = SystemTime::now();
        c.record_received(p.payload.len(), received_at);
        // QoS >= 1: acknowledged once every clone of the message is dropped (its consumers
        // are done with it), not when it was queued.
        let (delivery, done) = if qos == QoS::AtMostOnce {
            (AckGuard::NONE, None)
        } else {
            let (d, done) = AckGuard::signal();
            (d, Some(done))
        };
        let msg = Message {
            session: Arc::clone(&self.session),
            topic: p.topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            dup: p.dup,
            packet_id: p.pkid,
            received_at,
            properties: p.properties,
            delivery,
        };
        tracing::trace!(session = %self.session, topic = %msg.topic, qos = %qos, bytes = msg.payload.len(), "message received");
        // Only a QoS 0 message can pause the reading: no clock read for the others.
        let budget = if qos == QoS::AtMostOnce {
            self.stall_budget()
        } else {
            Duration::ZERO
        };
        let room = self.dispatcher.dispatch(&msg, budget);
        drop(msg);
        if done.is_some() {
            acker.ack(room, done, token, tracked);
            None
        } else {
            room
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::io::link::LinkSpec;

    struct Nothing;
    impl Dispatcher for Nothing {
        fn dispatch(&self, _: &Message, _: Duration) -> Option<RoomWait> {
            None
        }
    }

    /// The driver's task lives as long as its session and is allocated at its full size:
    /// rumqttc's `EventLoop::poll` futures (about 10 KB) stay boxed, out of it.
    #[test]
    fn the_driver_task_is_small() {
        let opts = Arc::new(SessionOptions::new("s", "mqtt://127.0.0.1:1883"));
        let brokers: Arc<[BrokerUrl]> =
            Arc::from(vec![BrokerUrl::parse("s", "mqtt://127.0.0.1:1883").unwrap()]);
        let (client, link) = Link::new(LinkSpec {
            opts: Arc::clone(&opts),
            client_id: Arc::from("s"),
            brokers: Arc::clone(&brokers),
            tls: None,
            hold_pubrel: false,
        });
        let (events, _rx) = flume::bounded(1);
        let driver = Driver::new(DriverSetup {
            session: Arc::from("s"),
            opts,
            brokers,
            link,
            client,
            events,
            dispatcher: Arc::new(Nothing),
            counters: Arc::new(SessionCounters::default()),
            initial_delay: None,
            connect_limit: Arc::new(tokio::sync::Semaphore::new(1)),
            inbound: None,
        });
        let task = driver.run();
        let size = std::mem::size_of_val(&task);
        println!("the driver's task: {size} bytes");
        assert!(size <= 4096, "the driver's task takes {size} bytes");
    }
}
