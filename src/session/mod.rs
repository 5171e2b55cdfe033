//! [`SessionActor`]: one MQTT connection, its state machine, subscriptions and outbox.
//!
//! The actor owns a rumqttc client whose event loop runs in a separate task, the
//! [`driver`]. The driver reports connection events ([`driver::DriverEvent`]) through a
//! bounded channel attached with `add_stream`; the actor turns them into state
//! transitions, [`crate::Event`]s and counters, restores subscriptions after a
//! connect, and feeds the [`outbox`] into rumqttc. Incoming messages never pass through
//! the actor: the driver hands them to the session's dispatcher directly.
//!
//! Guarantees:
//! - every state transition emits `session_state_changed`; `session_ready` follows
//!   `session_connected` once every active subscription was acknowledged;
//! - QoS >= 1 publishes complete on PUBACK/PUBCOMP and survive reconnects (re-sent after
//!   the next CONNACK) and actor restarts; QoS 0 publishes are refused while disconnected;
//! - the actor is `Supervised`: if it stops unexpectedly, actix restarts it in place (same
//!   outbox, same subscriptions) and it reconnects after a backoff delay.

pub mod backoff;
pub mod counters;
pub mod driver;
pub(crate) mod failure;
pub mod handle;
pub mod incoming;
pub mod latency;
pub mod link;
pub mod outbox;
pub mod rates;
pub mod state;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use rumqttc::Outgoing;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use self::counters::SessionCounters;
use self::driver::{Driver, DriverEvent};
use self::incoming::Dispatcher;
use self::link::{BrokerLimits, Client, Link};
use self::outbox::Outbox;
use self::state::{SessionState, Transition};
use crate::error::Error;
use crate::event::{ConnectionFailure, Event, EventBus, EventData};
use crate::message::SubscribeOptions;
use crate::message::{Publish, QoS};
use crate::options::{BrokerUrl, SessionOptions};
use crate::reason::ReasonCode;
use crate::store::{unix_ms, SessionMeta, Store, StoredPublish};
use crate::topic::TopicFilter;

/// Capacity of the driver → actor event channel.
const DRIVER_EVENTS: usize = 1024;
/// How long a graceful close waits for queued QoS >= 1 publishes to be acknowledged.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

type Responder = oneshot::Sender<Result<(), Error>>;

/// A snapshot of a session's connection, published on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStatus {
    /// Connection state.
    pub state: SessionState,
    /// Connected and every subscription restored.
    pub ready: bool,
    /// The broker connected to, if any.
    pub broker: Option<String>,
    /// The client id in use (on an MQTT 5 session with an empty client id, the one the
    /// broker assigned, once connected).
    pub client_id: String,
    /// What the broker's last CONNACK allowed (MQTT 5; empty on MQTT 3.1.1).
    pub broker_limits: BrokerLimits,
    /// When the current connection was established.
    pub connected_since: Option<SystemTime>,
    /// When the session entered its current [`state`](Self::state).
    pub state_since: SystemTime,
    /// The last connection failure.
    pub last_error: Option<ConnectionFailure>,
    /// Times the supervisor restarted the session's actor.
    pub restarts: u32,
    /// TLS certificate verification is off (`tls.skip_verify`): the broker's identity is
    /// not checked.
    pub tls_skip_verify: bool,
    /// Subscriptions the session keeps (restored after every reconnect).
    pub subscriptions: usize,
}

#[derive(Debug, Clone, Copy)]
struct Subscription {
    qos: QoS,
    options: SubscribeOptions,
    confirmed: bool,
}

#[derive(Debug)]
enum SubRequest {
    Restore(Vec<String>),
    Single(String, Option<Responder>),
}

/// Everything a [`SessionActor`] is built from (given by the supervisor).
pub struct SessionParts {
    /// Validated options.
    pub opts: Arc<SessionOptions>,
    /// Parsed broker URLs.
    pub brokers: Vec<BrokerUrl>,
    /// TLS configuration for the TLS brokers (built once by validation, reused for every
    /// attempt). When it is missing, TLS brokers are tried with a configuration that
    /// trusts no certificate: never in clear text.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The client id in use.
    pub client_id: String,
    /// Event bus of the manager.
    pub bus: EventBus,
    /// Where incoming messages go.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Shared counters.
    pub counters: Arc<SessionCounters>,
    /// Status publisher.
    pub status: watch::Sender<SessionStatus>,
    /// Connection attempts in flight across the manager are bounded by this semaphore.
    pub connect_limit: Arc<tokio::sync::Semaphore>,
    /// The manager's store, if it has one.
    pub store: Option<Store>,
    /// Publishes found in the store's outbox for this session (replayed first, in order).
    pub restored_outbox: Vec<(u64, StoredPublish)>,
}

impl std::fmt::Debug for SessionParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionParts")
            .field("name", &self.opts.name)
            .finish_non_exhaustive()
    }
}

/// The actor owning one MQTT connection. See the [module docs](self).
pub struct SessionActor {
    name: Arc<str>,
    p: SessionParts,
    state: SessionState,
    ready: bool,
    connected_broker: Option<usize>,
    connected_since: Option<SystemTime>,
    state_since: SystemTime,
    last_error: Option<ConnectionFailure>,
    ever_connected: bool,
    client: Option<Client>,
    driver: Option<tokio::task::JoinHandle<()>>,
    broker_limits: BrokerLimits,
    stream: Option<SpawnHandle>,
    subscriptions: BTreeMap<String, Subscription>,
    sub_queue: VecDeque<SubRequest>,
    sub_inflight: BTreeMap<u16, SubRequest>,
    outbox: Outbox<Responder>,
    outbox_len: watch::Sender<usize>,
    on_disconnect_written: Option<oneshot::Sender<()>>,
    /// QoS >= 1 publishes waiting for the next group commit to the store.
    durable_batch: Vec<(Publish, Responder)>,
    /// Publishes in the group commit being written now.
    durable_writing: usize,
    /// Filters to UNSUBSCRIBE at the next connect (persistent sessions).
    stale_filters: std::collections::BTreeSet<String>,
    meta: SessionMeta,
    restarts: u32,
    closed: bool,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl SessionActor {
    /// A session actor (not started).
    pub fn new(mut p: SessionParts) -> Self {
        let limit = p.opts.performance.max_pending_messages;
        let mut outbox = Outbox::new(limit);
        for (seq, sp) in std::mem::take(&mut p.restored_outbox) {
            let qos = QoS::try_from(sp.qos).unwrap_or(QoS::AtLeastOnce);
            let publish = Publish::new(sp.topic, sp.payload)
                .qos(qos)
                .retain(sp.retain);
            outbox.push_stored(publish, seq);
        }
        if !outbox.is_empty() {
            tracing::info!(session = %p.opts.name, count = outbox.len(), "replaying publishes from the store's outbox");
        }
        let mut meta = p
            .store
            .as_ref()
            .and_then(|s| s.session_meta_get(&p.opts.name).ok().flatten())
            .unwrap_or_default();
        if let Some(store) = &p.store {
            meta.client_id = p.client_id.clone();
            if let Err(e) = store.session_meta_put(&p.opts.name, &meta) {
                tracing::warn!(session = %p.opts.name, error = %e, "cannot save session metadata");
            }
        }
        SessionActor {
            name: Arc::from(p.opts.name.as_str()),
            p,
            state: SessionState::Disconnected,
            ready: false,
            connected_broker: None,
            connected_since: None,
            state_since: SystemTime::now(),
            last_error: None,
            ever_connected: false,
            client: None,
            driver: None,
            broker_limits: BrokerLimits::default(),
            stream: None,
            subscriptions: BTreeMap::new(),
            sub_queue: VecDeque::new(),
            sub_inflight: BTreeMap::new(),
            outbox,
            outbox_len: watch::channel(0).0,
            on_disconnect_written: None,
            durable_batch: Vec::new(),
            durable_writing: 0,
            stale_filters: std::collections::BTreeSet::new(),
            meta,
            restarts: 0,
            closed: false,
        }
    }

    fn emit(&self, data: EventData) {
        self.p.bus.emit(Event::new(Arc::clone(&self.name), data));
    }

    /// Publishes the status (only when it changed: this runs after every actor message,
    /// publishes included) and the outbox figures.
    fn publish_status(&self) {
        let changed = {
            let cur = self.p.status.borrow();
            cur.state != self.state
                || cur.ready != self.ready
                || cur.subscriptions != self.subscriptions.len()
                || cur.restarts != self.restarts
                || cur.connected_since != self.connected_since
                || cur.state_since != self.state_since
                || cur.client_id != self.p.client_id
                || cur.broker.as_deref()
                    != self
                        .connected_broker
                        .map(|i| self.p.brokers[i].url.as_str())
                || cur.last_error != self.last_error
                || cur.broker_limits != self.broker_limits
        };
        if changed {
            let st = SessionStatus {
                state: self.state,
                ready: self.ready,
                broker: self.connected_broker.map(|i| self.p.brokers[i].url.clone()),
                client_id: self.p.client_id.clone(),
                broker_limits: self.broker_limits.clone(),
                connected_since: self.connected_since,
                state_since: self.state_since,
                last_error: self.last_error.clone(),
                restarts: self.restarts,
                tls_skip_verify: self.skips_tls_verification(),
                subscriptions: self.subscriptions.len(),
            };
            self.p.status.send_replace(st);
        }
        let pending = self.outbox.len();
        self.p.counters.set_outbox(pending, self.outbox.inflight());
        self.outbox_len.send_if_modified(|n| {
            let modified = *n != pending;
            *n = pending;
            modified
        });
    }

    /// Whether `tls.skip_verify` is on and some broker uses TLS.
    fn skips_tls_verification(&self) -> bool {
        self.p.opts.tls.as_ref().is_some_and(|t| t.skip_verify)
            && self.p.brokers.iter().any(|b| b.transport.is_tls())
    }

    fn transition(&mut self, t: Transition) {
        if let Some(new) = self.state.on(t) {
            let old = self.state;
            self.state = new;
            self.state_since = SystemTime::now();
            tracing::info!(session = %self.name, from = %old, to = %new, "session state changed");
            self.emit(EventData::SessionStateChanged { old, new });
        }
    }

    fn start_driver(&mut self, ctx: &mut Context<Self>, initial_delay: Option<Duration>) {
        let (client, link) = Link::new(
            &self.p.opts,
            &self.p.client_id,
            &self.p.brokers,
            self.p.tls.as_ref(),
        );
        let (tx, rx) = mpsc::channel(DRIVER_EVENTS);
        let d = Driver {
            session: Arc::clone(&self.name),
            opts: Arc::clone(&self.p.opts),
            brokers: self.p.brokers.clone(),
            link,
            client: client.clone(),
            events: tx,
            dispatcher: Arc::clone(&self.p.dispatcher),
            counters: Arc::clone(&self.p.counters),
            initial_delay,
            connect_limit: Arc::clone(&self.p.connect_limit),
        };
        self.client = Some(client);
        self.driver = Some(tokio::task::spawn_local(d.run()));
        self.stream = Some(ctx.add_stream(ReceiverStream::new(rx)));
    }

    fn stop_driver(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
    }

    /// QoS >= 1 publishes the outbox may have in flight: `performance.inflight`, capped
    /// below the broker's Receive Maximum (one slot is kept free so that rumqttc, whose
    /// window is the same, never stops reading the acknowledgements we queue).
    fn inflight_cap(&self) -> usize {
        let own = usize::from(self.p.opts.performance.inflight);
        match self.broker_limits.receive_maximum {
            Some(r) => own.min(usize::from(r).saturating_sub(1).max(1)),
            None => own,
        }
    }

    /// Hands waiting publishes to rumqttc while connected and within the in-flight limit.
    fn pump(&mut self) {
        if self.state != SessionState::Connected || self.client.is_none() {
            return;
        }
        let max = self.inflight_cap();
        let max_packet = self.broker_limits.maximum_packet_size;
        while let Some((id, p)) = self.outbox.peek_sendable(max) {
            if let Some(limit) = max_packet {
                let size = p.packet_len();
                if size > limit as usize {
                    // The broker would close the connection over it [MQTT-3.1.2-24].
                    if let Some(e) = self.outbox.remove_waiting(id) {
                        tracing::warn!(session = %self.name, topic = %e.publish.topic, size, max = limit,
                            "publish larger than the broker's maximum packet size refused");
                        self.fail(
                            e,
                            Error::PacketTooLarge {
                                session: self.name.to_string(),
                                size,
                                max: limit,
                            },
                        );
                    }
                    continue;
                }
            }
            let Some(client) = &self.client else { return };
            if client.publish_now(p) {
                self.outbox.mark_handed(id);
            } else {
                // Channel full: the next processed request frees a slot and pumps again.
                break;
            }
        }
    }

    /// Ends an entry with an error the broker (or its limits) gave: it is not retried, so
    /// it also leaves the store.
    fn fail(&mut self, entry: outbox::Entry<Responder>, err: Error) {
        if let (Some(store), Some(seq)) = (&self.p.store, entry.seq) {
            if let Err(e) = store.outbox_remove(&self.name, seq) {
                tracing::error!(session = %self.name, error = %e, "cannot remove a refused publish from the store");
            }
        }
        if let Some(r) = entry.responder {
            let _ = r.send(Err(err));
        }
    }

    fn complete(&mut self, entry: outbox::Entry<Responder>) {
        if let (Some(store), Some(seq)) = (&self.p.store, entry.seq) {
            // Not flushed: losing this removal in a crash only means one duplicate later.
            if let Err(e) = store.outbox_remove(&self.name, seq) {
                tracing::error!(session = %self.name, error = %e, "cannot remove an acknowledged publish from the store");
            }
        }
        let c = &self.p.counters;
        if entry.publish.qos != QoS::AtMostOnce {
            if let Some(written) = entry.written_at {
                c.ack_latency.observe(written.elapsed());
            }
        }
        c.messages_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.bytes_sent.fetch_add(
            entry.publish.payload.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(r) = entry.responder {
            let _ = r.send(Ok(()));
        }
    }

    /// Publishes accepted or being accepted (outbox plus group commit in progress).
    fn pending_total(&self) -> usize {
        self.outbox.len() + self.durable_batch.len() + self.durable_writing
    }

    /// Writes the waiting batch of QoS >= 1 publishes to the store in one group commit
    /// (one fsync, on a blocking thread), then queues them and reports them accepted.
    fn commit_durable(&mut self, ctx: &mut Context<Self>) {
        if self.durable_writing > 0 || self.durable_batch.is_empty() {
            return;
        }
        let Some(store) = self.p.store.clone() else {
            return;
        };
        let batch = std::mem::take(&mut self.durable_batch);
        self.durable_writing = batch.len();
        let session = self.name.to_string();
        let stored: Vec<StoredPublish> = batch
            .iter()
            .map(|(p, _)| StoredPublish {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: p.qos.as_u8(),
                retain: p.retain,
            })
            .collect();
        let write =
            actix_rt::task::spawn_blocking(move || store.outbox_push_many(&session, &stored));
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.durable_writing = 0;
            match res {
                Ok(Ok(seqs)) => {
                    for ((publish, tx), seq) in batch.into_iter().zip(seqs) {
                        act.outbox.push_stored(publish, seq);
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(session = %act.name, error = %e, "cannot write publishes to the store");
                    let msg = e.to_string();
                    for (_, tx) in batch {
                        let _ = tx.send(Err(Error::StoreWrite(msg.clone())));
                    }
                }
                Err(e) => {
                    for (_, tx) in batch {
                        let _ = tx.send(Err(Error::StoreWrite(e.to_string())));
                    }
                }
            }
            act.pump();
            act.publish_status();
            act.commit_durable(ctx);
        }));
    }

    fn save_meta(&mut self, connected: bool) {
        let Some(store) = &self.p.store else { return };
        let now = unix_ms(SystemTime::now());
        self.meta.client_id = self.p.client_id.clone();
        if connected {
            self.meta.last_connected_ms = Some(now);
        } else {
            self.meta.last_disconnected_ms = Some(now);
        }
        if let Err(e) = store.session_meta_put(&self.name, &self.meta) {
            tracing::warn!(session = %self.name, error = %e, "cannot save session metadata");
        }
    }

    fn restore_subscriptions(&mut self, session_present: bool) {
        let stale: Vec<String> = std::mem::take(&mut self.stale_filters)
            .into_iter()
            .filter(|f| !self.subscriptions.contains_key(f))
            .collect();
        if let (Some(client), true) = (&self.client, session_present) {
            for f in stale {
                tracing::info!(session = %self.name, filter = %f, "unsubscribing a filter no longer wanted");
                if let Err(e) = client.unsubscribe_now(f.as_str()) {
                    tracing::warn!(session = %self.name, filter = %f, error = %e, "cannot queue UNSUBSCRIBE");
                }
            }
        }
        if !session_present {
            if !self.p.opts.connect.resume_subscriptions && self.ever_connected {
                if !self.subscriptions.is_empty() {
                    tracing::warn!(session = %self.name, count = self.subscriptions.len(),
                        "broker kept no session and resume_subscriptions is off: subscriptions dropped");
                }
                self.subscriptions.clear();
            }
            for s in self.subscriptions.values_mut() {
                s.confirmed = false;
            }
        }
        let todo: Vec<(String, QoS, SubscribeOptions)> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.confirmed)
            .map(|(f, s)| (f.clone(), s.qos, s.options))
            .collect();
        if todo.is_empty() {
            self.mark_ready();
            return;
        }
        let Some(client) = &self.client else { return };
        match client.subscribe_now(&todo) {
            Ok(()) => self.sub_queue.push_back(SubRequest::Restore(
                todo.into_iter().map(|(f, _, _)| f).collect(),
            )),
            Err(e) => {
                tracing::error!(session = %self.name, error = %e, "cannot queue SUBSCRIBE; will retry on reconnect");
            }
        }
    }

    fn mark_ready(&mut self) {
        if !self.ready && self.state == SessionState::Connected {
            self.ready = true;
            tracing::info!(session = %self.name, subscriptions = self.subscriptions.len(), "session ready");
            self.emit(EventData::SessionReady {
                subscriptions: self.subscriptions.len(),
            });
        }
    }

    fn on_suback(&mut self, pkid: u16, codes: Vec<Result<QoS, ReasonCode>>) {
        let Some(req) = self.sub_inflight.remove(&pkid) else {
            return;
        };
        let filters: Vec<String> = match &req {
            SubRequest::Restore(f) => f.clone(),
            SubRequest::Single(f, _) => vec![f.clone()],
        };
        let mut refused = None;
        for (f, code) in filters.iter().zip(codes) {
            match code {
                Ok(_) => {
                    if let Some(s) = self.subscriptions.get_mut(f) {
                        s.confirmed = true;
                    }
                }
                Err(reason) => {
                    tracing::warn!(session = %self.name, filter = %f, reason = %reason, "broker refused subscription");
                    refused = Some(reason);
                }
            }
        }
        match req {
            SubRequest::Restore(_) => self.mark_ready(),
            SubRequest::Single(filter, Some(r)) => {
                let res = match refused {
                    None => Ok(()),
                    Some(reason) => {
                        self.subscriptions.remove(&filter);
                        Err(Error::SubscribeRefused {
                            session: self.name.to_string(),
                            filter,
                            reason,
                        })
                    }
                };
                let _ = r.send(res);
            }
            SubRequest::Single(..) => {}
        }
    }

    fn on_lost(
        &mut self,
        failure: ConnectionFailure,
        drained_qos1: usize,
        drained_qos0: usize,
        drained_subs: usize,
    ) {
        self.save_meta(false);
        let c = &self.p.counters;
        c.record_error(failure.kind);
        tracing::warn!(session = %self.name, broker = %failure.broker, kind = failure.kind.as_str(),
            error = %failure.message, "connection lost");
        self.ready = false;
        self.connected_broker = None;
        self.connected_since = None;
        self.last_error = Some(failure.clone());
        let lost = self.outbox.on_connection_lost(drained_qos1, drained_qos0);
        if !lost.is_empty() {
            c.dropped_on_disconnect
                .fetch_add(lost.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(session = %self.name, dropped = lost.len(),
                "QoS 0 publishes not written before the connection ended were dropped");
        }
        for lost in lost {
            if let Some(r) = lost.responder {
                let _ = r.send(Err(Error::NotConnected {
                    session: self.name.to_string(),
                }));
            }
        }
        // SUBSCRIBEs that were sent (or dropped by rumqttc) are re-sent on the next connect;
        // their callers already know the subscription is registered.
        let dropped: Vec<SubRequest> = self
            .sub_queue
            .drain(..drained_subs.min(self.sub_queue.len()))
            .collect();
        for req in dropped
            .into_iter()
            .chain(std::mem::take(&mut self.sub_inflight).into_values())
        {
            if let SubRequest::Single(_, Some(r)) = req {
                let _ = r.send(Ok(()));
            }
        }
        self.emit(EventData::SessionDisconnected {
            error: Some(failure),
        });
        if self.p.opts.connect.auto_reconnect {
            self.transition(Transition::Lost);
        } else {
            self.transition(Transition::GaveUp);
        }
    }

    /// Ends the session for good: fails what is pending, stops the driver.
    fn finish_close(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.stop_driver(ctx);
        self.ready = false;
        let was_connected = self.connected_broker.take().is_some();
        self.connected_since = None;
        for e in self.outbox.drain() {
            if let Some(r) = e.responder {
                let _ = r.send(Err(Error::SessionClosed(self.name.to_string())));
            }
        }
        for req in self
            .sub_queue
            .drain(..)
            .chain(std::mem::take(&mut self.sub_inflight).into_values())
        {
            if let SubRequest::Single(_, Some(r)) = req {
                let _ = r.send(Err(Error::SessionClosed(self.name.to_string())));
            }
        }
        if was_connected {
            self.emit(EventData::SessionDisconnected { error: None });
        }
        self.transition(Transition::Close);
        self.publish_status();
        // Stop the context (its timers and streams); supervision restarts it idle — a
        // closed actor starts nothing — and it goes away with the last handle.
        ctx.stop();
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        let delay = (self.restarts > 0)
            .then(|| backoff::Backoff::new(&self.p.opts.reconnect).base_delay(self.restarts));
        self.start_driver(ctx, delay);
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.p.counters.sample_rates(Instant::now());
            let timeout = act.p.opts.performance.write_timeout;
            for r in act.outbox.take_overdue(Instant::now(), timeout) {
                let _ = r.send(Err(Error::PublishTimeout {
                    session: act.name.to_string(),
                    timeout,
                }));
            }
        });
        self.publish_status();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The context already dropped its streams and timers; cancelling their handles
        // here would cancel the new ones, which reuse the same handle numbers.
        self.stream = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
        if self.closed {
            return;
        }
        self.restarts += 1;
        tracing::warn!(session = %self.name, restarts = self.restarts, "session actor stopped unexpectedly; restarting");
        // The old request channel is gone with its client: everything handed to it is
        // treated as dropped (QoS >= 1 goes back to waiting).
        let drained = self.outbox.len();
        let sent_subs = self.sub_queue.len();
        if self.connected_broker.is_some() {
            self.on_lost(
                ConnectionFailure {
                    kind: crate::event::ErrorKind::Io,
                    broker: self
                        .connected_broker
                        .map(|i| self.p.brokers[i].url.clone())
                        .unwrap_or_default(),
                    message: "session actor restarted".into(),
                    reason: None,
                },
                drained,
                drained,
                sent_subs,
            );
        } else {
            for lost in self.outbox.on_connection_lost(drained, drained) {
                if let Some(r) = lost.responder {
                    let _ = r.send(Err(Error::NotConnected {
                        session: self.name.to_string(),
                    }));
                }
            }
            self.sub_queue.clear();
            self.sub_inflight.clear();
        }
        self.transition(Transition::GaveUp);
    }
}

impl StreamHandler<DriverEvent> for SessionActor {
    fn handle(&mut self, ev: DriverEvent, _: &mut Context<Self>) {
        match ev {
            DriverEvent::Outgoing(out) => self.on_outgoing(out),
            DriverEvent::PubAck { pkid, refused } => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    match refused {
                        None => self.complete(e),
                        Some(reason) => {
                            tracing::warn!(session = %self.name, topic = %e.publish.topic, reason = %reason,
                                "broker refused a publish");
                            let err = Error::PublishRefused {
                                session: self.name.to_string(),
                                topic: e.publish.topic.clone(),
                                reason,
                            };
                            self.fail(e, err);
                        }
                    }
                }
                self.pump();
            }
            DriverEvent::PubComp(pkid) => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    self.complete(e);
                }
                self.pump();
            }
            DriverEvent::SubAck { pkid, codes } => self.on_suback(pkid, codes),
            DriverEvent::Attempt { broker, attempt } => {
                let b = &self.p.brokers[broker];
                if b.transport.is_tls() && self.skips_tls_verification() {
                    tracing::warn!(session = %self.name, broker = %b.url,
                        "TLS certificate verification is disabled (tls.skip_verify): the broker's identity is not checked");
                }
                self.emit(EventData::SessionConnecting {
                    broker: self.p.brokers[broker].url.clone(),
                    attempt,
                });
                self.transition(Transition::Attempt);
            }
            DriverEvent::AttemptFailed(f) => {
                self.p.counters.record_error(f.kind);
                tracing::warn!(session = %self.name, broker = %f.broker, kind = f.kind.as_str(),
                    error = %f.message, "connection attempt failed");
                self.last_error = Some(f.clone());
                self.emit(EventData::SessionDisconnected { error: Some(f) });
            }
            DriverEvent::Waiting { attempt, delay } => {
                self.transition(Transition::AttemptFailed);
                tracing::info!(session = %self.name, attempt, delay = ?delay, "reconnecting after delay");
                self.emit(EventData::SessionReconnecting { attempt, delay });
            }
            DriverEvent::GaveUp => {
                tracing::warn!(session = %self.name, "giving up connecting");
                self.transition(Transition::GaveUp);
            }
            DriverEvent::Connected {
                broker,
                session_present,
                assigned_client_id,
                limits,
            } => {
                if let Some(id) = assigned_client_id {
                    tracing::info!(session = %self.name, client_id = %id, "broker assigned a client id");
                    self.p.client_id = id;
                }
                self.broker_limits = limits;
                if self.ever_connected {
                    self.p
                        .counters
                        .reconnects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let url = self.p.brokers[broker].url.clone();
                tracing::info!(session = %self.name, broker = %url, session_present, "connected");
                self.connected_broker = Some(broker);
                self.connected_since = Some(SystemTime::now());
                self.emit(EventData::SessionConnected {
                    broker: url,
                    session_present,
                });
                self.transition(Transition::Connected);
                self.restore_subscriptions(session_present);
                self.ever_connected = true;
                self.save_meta(true);
                self.pump();
            }
            DriverEvent::Lost {
                failure,
                drained_qos1,
                drained_qos0,
                drained_subs,
            } => self.on_lost(failure, drained_qos1, drained_qos0, drained_subs),
        }
        self.publish_status();
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The driver only ends by giving up (reported before) or by dying.
        if !self.closed && self.state != SessionState::Disconnected {
            tracing::error!(session = %self.name, "session driver ended unexpectedly; restarting the actor");
            ctx.stop();
        }
    }
}

impl SessionActor {
    fn on_outgoing(&mut self, out: Outgoing) {
        match out {
            Outgoing::Publish(pkid) => {
                if let Some(e) = self.outbox.on_written(pkid, Instant::now()) {
                    self.complete(e);
                }
            }
            Outgoing::AwaitAck(pkid) => self.outbox.on_collision(pkid),
            Outgoing::Subscribe(pkid) => {
                if let Some(req) = self.sub_queue.pop_front() {
                    self.sub_inflight.insert(pkid, req);
                }
            }
            Outgoing::Disconnect => {
                if let Some(tx) = self.on_disconnect_written.take() {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
        self.pump();
    }
}

/// Publish a message through this session. Completes when QoS 0 is written to the socket
/// or QoS >= 1 is acknowledged (PUBACK / PUBCOMP).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct PublishMsg(pub Publish);

impl Handler<PublishMsg> for SessionActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, PublishMsg(publish): PublishMsg, ctx: &mut Context<Self>) -> Self::Result {
        let name = self.name.to_string();
        if self.closed {
            return Box::pin(async move { Err(Error::SessionClosed(name)) });
        }
        if publish.qos == QoS::AtMostOnce && self.state != SessionState::Connected {
            return Box::pin(async move { Err(Error::NotConnected { session: name }) });
        }
        let limit = self.p.opts.performance.max_pending_messages;
        if self.pending_total() >= limit {
            return Box::pin(async move {
                Err(Error::QueueFull {
                    session: name,
                    limit,
                })
            });
        }
        let (tx, rx) = oneshot::channel();
        if publish.qos != QoS::AtMostOnce && self.p.store.is_some() {
            // With a store, "accepted" means durable: answered after the group commit.
            self.durable_batch.push((publish, tx));
            self.commit_durable(ctx);
            return Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) });
        }
        if self.outbox.push(publish, Some(tx)).is_err() {
            return Box::pin(async move {
                Err(Error::QueueFull {
                    session: name,
                    limit,
                })
            });
        }
        self.pump();
        self.publish_status();
        Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) })
    }
}

/// Subscribe the session to a filter. Completes on SUBACK when connected, at once
/// otherwise (the subscription is sent at every connect).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Subscribe {
    /// The filter.
    pub filter: TopicFilter,
    /// The maximum QoS asked for.
    pub qos: QoS,
    /// MQTT 5 subscribe options (ignored by MQTT 3.1.1 sessions).
    pub options: SubscribeOptions,
}

impl Handler<Subscribe> for SessionActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let name = self.name.to_string();
        if self.closed {
            return Box::pin(async move { Err(Error::SessionClosed(name)) });
        }
        let filter = msg.filter.as_str().to_string();
        let unchanged = self
            .subscriptions
            .get(&filter)
            .is_some_and(|s| s.qos == msg.qos && s.options == msg.options && s.confirmed);
        self.subscriptions.insert(
            filter.clone(),
            Subscription {
                qos: msg.qos,
                options: msg.options,
                confirmed: unchanged,
            },
        );
        self.publish_status();
        if unchanged || self.state != SessionState::Connected {
            return Box::pin(async { Ok(()) });
        }
        let Some(client) = &self.client else {
            return Box::pin(async { Ok(()) });
        };
        let (tx, rx) = oneshot::channel();
        match client.subscribe_now(&[(filter.clone(), msg.qos, msg.options)]) {
            Ok(()) => self
                .sub_queue
                .push_back(SubRequest::Single(filter, Some(tx))),
            Err(e) => {
                tracing::warn!(session = %self.name, filter = %filter, error = %e,
                    "cannot queue SUBSCRIBE now; it is sent at the next connect");
                return Box::pin(async { Ok(()) });
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) })
    }
}

/// Unsubscribe the session from a filter (sent at once when connected).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Unsubscribe {
    /// The filter, as subscribed.
    pub filter: TopicFilter,
}

impl Handler<Unsubscribe> for SessionActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        if self.closed {
            return Err(Error::SessionClosed(self.name.to_string()));
        }
        let was_sent = self
            .subscriptions
            .remove(msg.filter.as_str())
            .is_some_and(|s| s.confirmed || self.state == SessionState::Connected);
        self.publish_status();
        if was_sent || !self.p.opts.connect.clean_session {
            match &self.client {
                Some(client) if self.state == SessionState::Connected => {
                    if let Err(e) = client.unsubscribe_now(msg.filter.as_str()) {
                        tracing::warn!(session = %self.name, filter = %msg.filter, error = %e, "cannot queue UNSUBSCRIBE");
                    }
                }
                // A persistent session's broker keeps its subscriptions while we are away:
                // unsubscribe at the next connect.
                _ if !self.p.opts.connect.clean_session => {
                    self.stale_filters.insert(msg.filter.as_str().to_string());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Close the session: wait (briefly) for queued QoS >= 1 publishes, send DISCONNECT (so
/// the broker discards the will message), stop. The actor then answers `SessionClosed`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for SessionActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        let connected = self.state == SessionState::Connected && !self.closed;
        let mut len = self.outbox_len.subscribe();
        let (tx, rx) = oneshot::channel();
        if connected {
            self.on_disconnect_written = Some(tx);
        }
        let client = self.client.clone();
        let flush = CLOSE_FLUSH.min(self.p.opts.performance.write_timeout);
        let fut = async move {
            if !connected {
                return;
            }
            let _ = tokio::time::timeout(flush, len.wait_for(|n| *n == 0)).await;
            if let Some(c) = client {
                if c.disconnect_now().is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
                }
            }
        };
        Box::pin(
            fut.into_actor(self)
                .map(|_, act, ctx| act.finish_close(ctx)),
        )
    }
}

/// The session's current status.
#[derive(Debug, Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for SessionActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.p.status.borrow().clone())
    }
}

/// Fault injection for tests: stops the actor as if it had failed, so that actix's
/// supervision restarts it (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InjectFailure;

#[cfg(feature = "fault-injection")]
impl Handler<InjectFailure> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: InjectFailure, ctx: &mut Context<Self>) {
        tracing::warn!(session = %self.name, "fault injected: stopping the session actor");
        ctx.stop();
    }
}
