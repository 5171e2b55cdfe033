//! The driver: the task that owns a session's rumqttc [`EventLoop`].
//!
//! It only ever awaits `EventLoop::poll` (plus, while connected, a read-timeout timer), so
//! keep-alive keeps flowing whatever the application does. It
//! - walks the broker list on every connection attempt and sleeps the backoff in between;
//! - hands incoming PUBLISHes straight to the session's [`Dispatcher`] (no actor hop) and
//!   acknowledges QoS >= 1 messages once every consumer accepted them (through `Acker`,
//!   which keeps the acknowledgements in arrival order [MQTT-4.6.0-2]);
//! - reports everything else to its [`SessionActor`](super::SessionActor) as
//!   [`DriverEvent`]s, in order, through a bounded channel.
//!
//! After a connection ends it empties rumqttc's own retransmission queue and state: the
//! actor's outbox is the single owner of unacknowledged publishes and re-sends them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, MqttState, Outgoing, Packet, Request, StateError, SubAck,
};
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::counters::SessionCounters;
use super::incoming::{Dispatcher, Pending};
use crate::event::{ConnectionFailure, ErrorKind};
use crate::message::{Message, QoS};
use crate::options::{BrokerUrl, SessionOptions, Transport};

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Acknowledgements that may wait for slow consumers (the broker's in-flight window
/// bounds this in practice; 65535 is the protocol's limit).
const ACK_QUEUE: usize = 65_535;

/// What the driver tells its actor.
#[derive(Debug)]
pub enum DriverEvent {
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
    /// No more attempts (max attempts reached, or lost without auto-reconnect).
    GaveUp,
    /// CONNACK received.
    Connected {
        /// Index into the broker list.
        broker: usize,
        /// The broker kept a session for this client id.
        session_present: bool,
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
    Outgoing(Outgoing),
    /// PUBACK for an outgoing QoS 1 publish.
    PubAck(u16),
    /// PUBCOMP for an outgoing QoS 2 publish.
    PubComp(u16),
    /// SUBACK.
    SubAck(SubAck),
}

/// Everything the driver task needs.
pub struct Driver {
    pub(super) session: Arc<str>,
    pub(super) opts: Arc<SessionOptions>,
    pub(super) brokers: Vec<BrokerUrl>,
    pub(super) client_id: String,
    pub(super) eventloop: EventLoop,
    pub(super) client: AsyncClient,
    pub(super) events: mpsc::Sender<DriverEvent>,
    pub(super) dispatcher: Arc<dyn Dispatcher>,
    pub(super) counters: Arc<SessionCounters>,
    /// Delay before the very first attempt (set when the supervisor restarts the actor).
    pub(super) initial_delay: Option<Duration>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// rumqttc options for one broker of the session.
pub(super) fn mqtt_options(
    opts: &SessionOptions,
    client_id: &str,
    broker: &BrokerUrl,
) -> MqttOptions {
    let host = match broker.transport {
        Transport::Ws | Transport::Wss => broker.url.clone(),
        Transport::Tcp | Transport::Tls => broker.host.clone(),
    };
    let mut mo = MqttOptions::new(client_id, host, broker.port);
    mo.set_keep_alive(opts.connect.keep_alive);
    mo.set_clean_session(opts.connect.clean_session);
    let max = opts.performance.max_message_size;
    // Room for the topic and header: oversized payloads are refused by this crate with a
    // typed error (outgoing) or dropped and counted (incoming), not by a disconnect.
    mo.set_max_packet_size(
        max.saturating_add(65_536 + 16),
        max.saturating_add(65_536 + 16),
    );
    // One slot more than the outbox ever uses, so rumqttc never stops reading requests
    // (acknowledgements of incoming messages travel the same channel).
    mo.set_inflight(opts.performance.inflight.saturating_add(1));
    mo.set_manual_acks(true);
    mo.set_request_channel_capacity(usize::from(opts.performance.inflight) + 256);
    if let (Some(user), pass) = (&opts.username, &opts.password) {
        mo.set_credentials(
            user.clone(),
            pass.as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        );
    }
    if let Some(will) = &opts.connect.will {
        mo.set_last_will(LastWill::new(
            will.topic.clone(),
            will.payload.clone().into_bytes(),
            will.qos.into(),
            will.retain,
        ));
    }
    if broker.transport == Transport::Ws {
        mo.set_transport(rumqttc::Transport::Ws);
    }
    mo
}

impl Driver {
    /// Runs until the connection is given up; the actor aborts the task to stop it sooner.
    pub async fn run(mut self) {
        let mut net = self.eventloop.network_options();
        net.set_connection_timeout(self.opts.connect.connect_timeout.as_secs().max(1));
        net.set_tcp_nodelay(true);
        self.eventloop.set_network_options(net);
        let options: Vec<MqttOptions> = self
            .brokers
            .iter()
            .map(|b| mqtt_options(&self.opts, &self.client_id, b))
            .collect();
        let acker = Acker::spawn(self.client.clone());
        let mut backoff = Backoff::new(&self.opts.reconnect);
        let mut attempt: u32 = 0;
        let mut delay = self.initial_delay.take();
        loop {
            if let Some(d) = delay.take() {
                tokio::time::sleep(d).await;
            }
            attempt += 1;
            let mut connected = None;
            for (i, mo) in options.iter().enumerate() {
                self.report(DriverEvent::Attempt { broker: i, attempt })
                    .await;
                self.counters
                    .connection_attempts
                    .fetch_add(1, Ordering::Relaxed);
                self.eventloop.mqtt_options = mo.clone();
                self.eventloop.network = None;
                match self.eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = Some((i, ack.session_present));
                        break;
                    }
                    Ok(other) => {
                        let failure = self.failure(
                            i,
                            ErrorKind::Protocol,
                            format!("expected CONNACK, got {other:?}"),
                        );
                        self.report(DriverEvent::AttemptFailed(failure)).await;
                    }
                    Err(e) => {
                        let failure = classify(&e, &self.brokers[i]);
                        self.report(DriverEvent::AttemptFailed(failure)).await;
                    }
                }
            }
            match connected {
                Some((broker, session_present)) => {
                    self.report(DriverEvent::Connected {
                        broker,
                        session_present,
                    })
                    .await;
                    let since = Instant::now();
                    let lost = self.run_connected(broker, &acker).await;
                    self.report(lost).await;
                    if !self.opts.connect.auto_reconnect {
                        self.report(DriverEvent::GaveUp).await;
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
                        self.report(DriverEvent::GaveUp).await;
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

    async fn report(&self, ev: DriverEvent) {
        // The actor only stops listening when it is stopping, and then aborts this task.
        let _ = self.events.send(ev).await;
    }

    fn failure(&self, broker: usize, kind: ErrorKind, message: String) -> ConnectionFailure {
        ConnectionFailure {
            kind,
            broker: self.brokers[broker].url.clone(),
            message,
        }
    }

    /// Polls an established connection until it ends; returns the `Lost` event.
    async fn run_connected(&mut self, broker: usize, acker: &Acker) -> DriverEvent {
        let read_timeout = self.opts.effective_read_timeout();
        let far = Duration::from_secs(86_400 * 365);
        let rt = read_timeout.unwrap_or(far);
        let mut last_in = Instant::now();
        let sleep = tokio::time::sleep(rt);
        tokio::pin!(sleep);
        let failure = loop {
            // Keep the timer's deadline within [last_in + 3/4 rt, last_in + rt] without
            // resetting it for every packet.
            let want = last_in + rt;
            if want > sleep.deadline().into_std() + rt / 4 {
                sleep.as_mut().reset(want.into());
            }
            let polled = tokio::select! {
                biased;
                r = self.eventloop.poll() => Some(r),
                _ = &mut sleep, if read_timeout.is_some() => None,
            };
            match polled {
                Some(Ok(Event::Incoming(packet))) => {
                    last_in = Instant::now();
                    self.on_incoming(packet, acker).await;
                }
                Some(Ok(Event::Outgoing(out))) => self.report(DriverEvent::Outgoing(out)).await,
                Some(Err(e)) => break classify(&e, &self.brokers[broker]),
                None => {
                    // The poll future was dropped mid-way: the connection is declared dead.
                    self.eventloop.clean();
                    break self.failure(
                        broker,
                        ErrorKind::Timeout,
                        format!("nothing received for {rt:?} (read timeout)"),
                    );
                }
            }
        };
        // Events rumqttc had already buffered still count (acks, messages read).
        while let Some(ev) = self.eventloop.state.events.pop_front() {
            if let Event::Incoming(packet) = ev {
                self.on_incoming(packet, acker).await;
            }
        }
        let (mut drained_qos1, mut drained_qos0, mut drained_subs) = (0, 0, 0);
        for req in self.eventloop.pending.drain(..) {
            match req {
                Request::Publish(p) => match (p.pkid, p.qos) {
                    (0, rumqttc::QoS::AtMostOnce) => drained_qos0 += 1,
                    (0, _) => drained_qos1 += 1,
                    _ => {}
                },
                Request::Subscribe(_) => drained_subs += 1,
                _ => {}
            }
        }
        self.eventloop.state =
            MqttState::new(self.opts.performance.inflight.saturating_add(1), true);
        self.eventloop.network = None;
        DriverEvent::Lost {
            failure,
            drained_qos1,
            drained_qos0,
            drained_subs,
        }
    }

    async fn on_incoming(&mut self, packet: Incoming, acker: &Acker) {
        match packet {
            Packet::Publish(p) => self.on_publish(p, acker),
            Packet::PubAck(a) => self.report(DriverEvent::PubAck(a.pkid)).await,
            Packet::PubComp(c) => self.report(DriverEvent::PubComp(c.pkid)).await,
            Packet::SubAck(s) => self.report(DriverEvent::SubAck(s)).await,
            _ => {}
        }
    }

    fn on_publish(&mut self, p: rumqttc::Publish, acker: &Acker) {
        let c = &self.counters;
        let qos = QoS::from(p.qos);
        if p.payload.len() > self.opts.performance.max_message_size {
            c.dropped_oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session = %self.session,
                size = p.payload.len(),
                max = self.opts.performance.max_message_size,
                "incoming message larger than max_message_size dropped"
            );
            if qos != QoS::AtMostOnce {
                acker.ack(None, p);
            }
            return;
        }
        c.messages_received.fetch_add(1, Ordering::Relaxed);
        c.bytes_received
            .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        // One clock read per message: the receive time stamps the message, the session's
        // last-message time (what `touch_received` would read the clock again for) and,
        // in `RouteTable::dispatch`, each route's (benches/matching.rs, docs/BENCHMARKS.md).
        let received_at = SystemTime::now();
        c.last_message_ms.store(
            received_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Ordering::Relaxed,
        );
        let msg = Message {
            session: Arc::clone(&self.session),
            topic: Arc::from(p.topic.as_str()),
            payload: p.payload.clone(),
            qos,
            retain: p.retain,
            dup: p.dup,
            packet_id: p.pkid,
            received_at,
        };
        tracing::trace!(session = %self.session, topic = %msg.topic, qos = %qos, bytes = msg.payload.len(), "message received");
        let wait = self.dispatcher.dispatch(&msg);
        if qos != QoS::AtMostOnce {
            acker.ack(wait, p);
        }
    }
}

/// Sends PUBACK/PUBREC for incoming QoS >= 1 messages, in arrival order, each once its
/// consumers accepted the message.
struct Acker {
    client: AsyncClient,
    queue: mpsc::Sender<(Option<Pending>, rumqttc::Publish)>,
    waiting: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    fn spawn(client: AsyncClient) -> Acker {
        let (queue, mut rx) = mpsc::channel::<(Option<Pending>, rumqttc::Publish)>(ACK_QUEUE);
        let waiting = Arc::new(AtomicUsize::new(0));
        let (c, w) = (client.clone(), Arc::clone(&waiting));
        let task = tokio::spawn(async move {
            while let Some((pending, publish)) = rx.recv().await {
                if let Some(p) = pending {
                    p.await;
                }
                let _ = c.ack(&publish).await;
                w.fetch_sub(1, Ordering::AcqRel);
            }
        });
        Acker {
            client,
            queue,
            waiting,
            task,
        }
    }

    fn ack(&self, pending: Option<Pending>, publish: rumqttc::Publish) {
        if pending.is_none() && self.waiting.load(Ordering::Acquire) == 0 {
            match self.client.try_ack(&publish) {
                Ok(()) => return,
                Err(_) => {
                    tracing::trace!(pkid = publish.pkid, "request channel full, ack deferred")
                }
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.queue.try_send((pending, publish)) {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            let (_, publish) = match e {
                mpsc::error::TrySendError::Full(v) | mpsc::error::TrySendError::Closed(v) => v,
            };
            tracing::error!(
                pkid = publish.pkid,
                "acknowledgement queue full; message left unacknowledged for redelivery"
            );
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Maps a rumqttc connection error to a failure kind and message.
pub(super) fn classify(e: &ConnectionError, broker: &BrokerUrl) -> ConnectionFailure {
    let kind = match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => ErrorKind::Auth,
        ConnectionError::ConnectionRefused(_) => ErrorKind::Refused,
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => ErrorKind::Timeout,
        ConnectionError::MqttState(StateError::AwaitPingResp) => ErrorKind::Timeout,
        ConnectionError::MqttState(StateError::Io(_)) | ConnectionError::Io(_) => ErrorKind::Io,
        ConnectionError::MqttState(StateError::ConnectionAborted) => ErrorKind::Io,
        ConnectionError::Tls(_) => ErrorKind::Tls,
        _ => ErrorKind::Protocol,
    };
    let message = match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "no PINGRESP from the broker".to_string()
        }
        other => other.to_string(),
    };
    ConnectionFailure {
        kind,
        broker: broker.url.clone(),
        message,
    }
}
