//! The session's decisions, sans IO: [`SessionCore`].
//!
//! Everything a session decides lives here, in plain code that names no actix, tokio or
//! rumqttc type: its state and [`Lifecycle`], the outbox and its group commit to the
//! store, the subscriptions, what to re-send after a CONNACK, when to give up, what to
//! report to the supervisor. The actor (`actor.rs`, `handlers.rs`) is the shell around it:
//! it turns messages, driver events and store results into an [`Input`], calls
//! [`SessionCore::on`], and carries out the [`Effect`]s it gets back, in order.
//!
//! Two things cross the seam synchronously, through the [`Wire`] the shell passes in:
//! handing a publish, a PUBREL or a (UN)SUBSCRIBE to the connection's request channel,
//! which may be full (the core then stops and tries again on the next input). Everything
//! else is an effect: answering a caller, emitting an event, a store write (fire and
//! forget, or with its result coming back as [`Input::Stored`]), starting or stopping the
//! driver and the one-second tick, reporting to the supervisor, stopping the actor.
//!
//! The core is generic over `R`, whoever waits for an answer (a oneshot sender in the
//! actor, a number in the tests), as the outbox and the subscriptions are. Its
//! transitions are table-tested in `tests.rs`, with no broker and no runtime.
//!
//! Files: this one holds the state, the inputs and effects, and the life cycle;
//! `publish.rs` the publishing side (admission, group commit, the outbox into the wire,
//! completion, the store's removals); `connection.rs` what the driver reports
//! (attempts, CONNACK, acknowledgements, the end of a connection) and the subscriptions.

mod connection;
mod publish;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::commit::GroupCommit;
use super::io::link::{BrokerAck, BrokerLimits, Written};
use super::lane::LaneTicket;
use super::lifecycle::Lifecycle;
use super::outbox::{Outbox, Resend};
use super::state::{SessionState, Transition};
use super::status::StatusView;
use super::subscriptions::Subscriptions;
use crate::error::Error;
use crate::event::{ActorFailure, ConnectionFailure, EventData, GiveUpReason};
use crate::message::{Publish, QoS, SubscribeOptions};
use crate::metrics::counters::SessionCounters;
use crate::options::{BrokerUrl, SessionOptions};
use crate::store::{unix_ms, SessionMeta, StoredPacketId, StoredPublish};

/// The two clocks a transition may read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// For deadlines and latencies.
    pub mono: Instant,
    /// For what is shown (connected since, state since, stored metadata).
    pub wall: SystemTime,
}

impl Now {
    /// The current time.
    pub(crate) fn current() -> Self {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The connection's request side, as the core uses it: each call hands one request to
/// the connection without waiting and answers false when it could not (no connection,
/// or its channel is full).
pub(crate) trait Wire {
    /// Whether a connection's request channel is attached.
    fn attached(&self) -> bool;
    /// Hands a publish with packet id `pkid` (chosen by the outbox; 0 for QoS 0).
    fn publish(&mut self, publish: &Publish, pkid: u16) -> bool;
    /// Sends the held PUBREL for `pkid`.
    fn release(&mut self, pkid: u16) -> bool;
    /// One SUBSCRIBE for these filters.
    fn subscribe(&mut self, subs: &[(String, QoS, SubscribeOptions)]) -> bool;
    /// One UNSUBSCRIBE.
    fn unsubscribe(&mut self, filter: &str) -> bool;
}

/// Why a session's run ended, as the actor tells its supervisor.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) enum EndReason {
    /// The actor (or its driver task) stopped unexpectedly; it waits for the verdict.
    Failed(ActorFailure),
    /// The session stopped trying on its own terms (attempts exhausted, connection lost
    /// without auto-reconnect): the supervisor retires it.
    GaveUp(GiveUpReason),
}

/// Who learns what of one publish: `accepted` once it is queued (durable, with a store),
/// `done` once the broker acknowledged it (or it failed).
#[derive(Debug)]
pub(crate) struct Completion<R> {
    /// Answered on acceptance (or refusal).
    pub accepted: Option<R>,
    /// Answered on completion (or, when nobody waits for acceptance, refusal).
    pub done: Option<R>,
}

/// One store write of the session, as data; the shell runs it on the store worker, in
/// the order the effects came.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoreOp {
    /// Appends QoS >= 1 publishes to the session's outbox (one write, one flush): the
    /// result is their sequence numbers.
    PushMany(Vec<StoredPublish>),
    /// Records packet ids (and PUBREC flags) of outbox entries; `flush` waits for disk.
    SetPacketIds {
        /// The ids.
        ids: Vec<StoredPacketId>,
        /// Flush before answering.
        flush: bool,
    },
    /// Takes acknowledged publishes out of the session's outbox (not flushed).
    Remove {
        /// Their sequence numbers.
        seqs: Vec<u64>,
        /// Packet ids may be on disk for them (recorded by this run or an earlier one),
        /// to be removed too; without, a removal is one store operation, not two.
        ids: bool,
    },
    /// The session's metadata.
    PutMeta(SessionMeta),
}

/// One publish in the group commit to the store's outbox.
#[derive(Debug)]
pub(crate) enum Durable<R> {
    /// Queued in the outbox once it is written: QoS 2, a persistent session's publishes
    /// (their packet ids go to disk before the wire), and whatever comes after one of
    /// those while it waits, so that the order holds.
    Held(Publish, Completion<R>),
    /// A QoS 1 publish of a clean session, queued in the outbox (entry `id`) as it came
    /// and possibly on the wire already; `accepted` hears once it is written. Sending
    /// before the write risks nothing a QoS 1 publish does not already allow: a process
    /// that dies before the write never acknowledged it to its caller, who sends it again
    /// (a duplicate at most). It keeps the disk's latency out of the message's way.
    Sent {
        /// The outbox entry.
        id: u64,
        /// Whoever waits for acceptance.
        accepted: Option<R>,
        /// The entry was in the write (false: it completed before the write started,
        /// and nothing needed writing).
        written: bool,
    },
}

/// What a store write's result is for, when the core waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// The group commit's batch ([`StoreOp::PushMany`]).
    Committed,
    /// The packet ids of the handed batch ([`StoreOp::SetPacketIds`]); its publishes
    /// go to the wire next.
    IdsRecorded,
    /// The `released` flag of a QoS 2 publish; its PUBREL goes next.
    Released(u16),
}

/// What the session is told.
#[derive(Debug)]
pub(crate) enum Input<R> {
    /// The actor started (first time, or restarted in place by actix).
    Started,
    /// A driver was started for a link that does (MQTT 3.1.1) or does not choose its
    /// publishes' packet ids itself.
    DriverStarted {
        /// The outbox chooses packet ids, within `window`.
        takes_packet_ids: bool,
    },
    /// A publish to take in.
    Publish {
        /// The message.
        publish: Publish,
        /// Who waits for what.
        completion: Completion<R>,
        /// Its lane, when submitted through one.
        lane: Option<LaneTicket>,
    },
    /// Subscribe to a filter: answered on SUBACK when connected, at once otherwise.
    Subscribe {
        /// The filter.
        filter: String,
        /// The QoS asked for.
        qos: QoS,
        /// MQTT 5 subscribe options.
        options: SubscribeOptions,
        /// Who waits.
        responder: R,
    },
    /// Unsubscribe from a filter: answered at once.
    Unsubscribe {
        /// The filter.
        filter: String,
        /// Who waits.
        responder: R,
    },
    /// The driver tries `broker` (attempt number `attempt`).
    Attempt {
        /// Index into the broker list.
        broker: usize,
        /// From 1.
        attempt: u32,
    },
    /// One broker of an attempt failed.
    AttemptFailed(ConnectionFailure),
    /// Every broker failed; the next attempt starts after `delay`.
    Waiting {
        /// The next attempt's number.
        attempt: u32,
        /// The backoff delay.
        delay: Duration,
    },
    /// The driver stopped trying.
    DriverGaveUp {
        /// Attempts made.
        attempts: u32,
        /// The connection was lost and auto-reconnect is off.
        lost: bool,
    },
    /// CONNACK.
    Connected {
        /// Index into the broker list.
        broker: usize,
        /// The broker kept a session.
        session_present: bool,
        /// The client id the broker assigned (MQTT 5).
        assigned_client_id: Option<String>,
        /// The broker's limits.
        limits: BrokerLimits,
    },
    /// The connection ended; rumqttc dropped these requests it had not processed.
    Lost {
        /// Why.
        failure: ConnectionFailure,
        /// QoS >= 1 publishes.
        drained_qos1: usize,
        /// QoS 0 publishes.
        drained_qos0: usize,
        /// SUBSCRIBEs.
        drained_subs: usize,
    },
    /// The connection wrote a packet.
    Written(Written),
    /// The broker acknowledged one of our packets.
    Ack(BrokerAck),
    /// The driver's event stream ended.
    DriverEnded,
    /// A store write the core waits for ended: sequence numbers, or why it failed.
    Stored {
        /// What it was for.
        then: Then,
        /// Its result.
        result: Result<Vec<u64>, String>,
    },
    /// Hand the collected removals to the store now (the burst that made them is over).
    FlushRemovals,
    /// The one-second tick.
    Tick,
    /// End the session for good (after a graceful close's wait).
    Close,
    /// The actor stopped unexpectedly and is being restarted in place.
    Restarting,
    /// The supervisor's verdict: connect again after `delay`.
    Resume {
        /// The restart backoff.
        delay: Duration,
    },
    /// The supervisor's verdict: stop for good.
    Retire(GiveUpReason),
    /// A test stops the actor as if it had failed (feature `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    InjectFailure,
    /// The actor stopped.
    Stopped,
}

/// What the shell must do, in this order.
#[derive(Debug)]
pub(crate) enum Effect<R> {
    /// Answer a caller.
    Answer(R, Result<(), Error>),
    /// Emit a session event.
    Emit(EventData),
    /// A store write nobody waits for.
    Store(StoreOp),
    /// A store write whose result comes back as [`Input::Stored`].
    StoreThen(StoreOp, Then),
    /// Feed [`Input::FlushRemovals`] once the messages queued now are handled.
    FlushRemovalsSoon,
    /// Start the one-second tick ([`Input::Tick`]).
    StartTick,
    /// Stop it.
    StopTick,
    /// Start a driver (after `delay`).
    StartDriver(Option<Duration>),
    /// Stop the driver and drop the connection's request side.
    StopDriver,
    /// What the new connection re-sends first (the driver waits for it).
    Resend(Vec<Resend>),
    /// Tell the supervisor why the run ended.
    ReportEnd(EndReason),
    /// Stop the actor (supervision restarts it in place).
    Stop,
}

/// Everything the core is built from.
#[derive(Debug)]
pub(crate) struct CoreParts<R> {
    /// Validated options.
    pub opts: Arc<SessionOptions>,
    /// Parsed broker URLs.
    pub brokers: Arc<[BrokerUrl]>,
    /// The client id in use.
    pub client_id: Arc<str>,
    /// Shared counters.
    pub counters: Arc<SessionCounters>,
    /// The manager has a store.
    pub has_store: bool,
    /// A supervisor hears why runs end and decides what follows.
    pub has_supervisor: bool,
    /// The outbox, with what the store held.
    pub outbox: Outbox<R>,
    /// The stored metadata.
    pub meta: SessionMeta,
    /// The store held packet ids of this session's outbox entries.
    pub ids_on_disk: bool,
}

/// One session's decisions. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SessionCore<R> {
    name: Arc<str>,
    opts: Arc<SessionOptions>,
    brokers: Arc<[BrokerUrl]>,
    client_id: Arc<str>,
    counters: Arc<SessionCounters>,
    has_store: bool,
    has_supervisor: bool,
    state: SessionState,
    /// What the session may do next: run a driver, wait for a verdict, nothing (closed
    /// or gave up).
    life: Lifecycle,
    connected_broker: Option<usize>,
    connected_since: Option<SystemTime>,
    state_since: SystemTime,
    last_error: Option<ConnectionFailure>,
    /// History, not a state: whether any connection was ever made.
    ever_connected: bool,
    broker_limits: BrokerLimits,
    subscriptions: Subscriptions<R>,
    outbox: Outbox<R>,
    /// QoS >= 1 publishes on their way to the store's outbox (with a store).
    durable: GroupCommit<Durable<R>>,
    /// Of those, the ones queued in the outbox already ([`Durable::Sent`]).
    sent_early: usize,
    /// Handed publishes whose packet ids are being recorded (a persistent session with a
    /// store, MQTT 3.1.1): nothing is handed after them until they go to the wire.
    recording: Option<Vec<u64>>,
    /// Held PUBRELs to release that the wire had no room for.
    releases: Vec<u16>,
    /// Store sequence numbers of completed publishes, removed in one job per burst.
    removals: Vec<u64>,
    /// Packet ids of outbox entries may be on disk (loaded at start, or recorded since).
    ids_on_disk: bool,
    meta: SessionMeta,
    restarts: u32,
    /// Why the actor is stopping, when it stops itself after a failure.
    failure: Option<ActorFailure>,
    /// The one-second tick runs.
    ticking: bool,
    /// Effects of the input being handled.
    out: Vec<Effect<R>>,
}

impl<R> SessionCore<R> {
    /// A session that has not started; its metadata goes to the store first.
    pub(crate) fn new(parts: CoreParts<R>, now: Now) -> Self {
        let mut core = SessionCore {
            name: Arc::from(parts.opts.name.as_str()),
            opts: parts.opts,
            brokers: parts.brokers,
            client_id: parts.client_id,
            counters: parts.counters,
            has_store: parts.has_store,
            has_supervisor: parts.has_supervisor,
            state: SessionState::Disconnected,
            life: Lifecycle::new(),
            connected_broker: None,
            connected_since: None,
            state_since: now.wall,
            last_error: None,
            ever_connected: false,
            broker_limits: BrokerLimits::default(),
            subscriptions: Subscriptions::default(),
            outbox: parts.outbox,
            durable: GroupCommit::default(),
            sent_early: 0,
            recording: None,
            releases: Vec::new(),
            removals: Vec::new(),
            ids_on_disk: parts.ids_on_disk,
            meta: parts.meta,
            restarts: 0,
            failure: None,
            ticking: false,
            out: Vec::new(),
        };
        core.put_meta();
        core
    }

    /// Handles one input; returns the effects to carry out, in order.
    pub(crate) fn on(&mut self, input: Input<R>, now: Now, wire: &mut dyn Wire) -> Vec<Effect<R>> {
        match input {
            Input::Started => self.on_started(),
            Input::DriverStarted { takes_packet_ids } => {
                if takes_packet_ids && !self.outbox.chooses_ids() {
                    self.outbox
                        .choose_ids(super::io::link::packet_id_window(&self.opts));
                }
            }
            Input::Publish {
                publish,
                completion,
                lane,
            } => self.take_publish(publish, completion, lane, wire),
            Input::Subscribe {
                filter,
                qos,
                options,
                responder,
            } => self.subscribe(filter, qos, options, responder, wire),
            Input::Unsubscribe { filter, responder } => {
                let res = self.unsubscribe(&filter, wire);
                self.out.push(Effect::Answer(responder, res));
            }
            Input::Attempt { broker, attempt } => self.on_attempt(broker, attempt, now),
            Input::AttemptFailed(f) => self.on_attempt_failed(f),
            Input::Waiting { attempt, delay } => self.on_waiting(attempt, delay, now),
            Input::DriverGaveUp { attempts, lost } => self.on_driver_gave_up(attempts, lost, now),
            Input::Connected {
                broker,
                session_present,
                assigned_client_id,
                limits,
            } => self.on_connected(
                broker,
                session_present,
                assigned_client_id,
                limits,
                now,
                wire,
            ),
            Input::Lost {
                failure,
                drained_qos1,
                drained_qos0,
                drained_subs,
            } => self.on_lost(failure, drained_qos1, drained_qos0, drained_subs, now),
            Input::Written(w) => self.on_written(w, now, wire),
            Input::Ack(ack) => self.on_ack(ack, now, wire),
            Input::DriverEnded => {
                // The driver only ends by giving up (reported before) or by dying.
                if self.life.expects_driver() {
                    tracing::error!(session = %self.name, "session driver ended unexpectedly; restarting the actor");
                    self.failure = Some(ActorFailure::DriverEnded);
                    self.out.push(Effect::Stop);
                }
            }
            Input::Stored { then, result } => self.on_stored(then, result, wire),
            Input::FlushRemovals => self.flush_removals(),
            Input::Tick => self.on_tick(now, wire),
            Input::Close => self.close(now),
            Input::Restarting => self.on_restarting(now),
            Input::Resume { delay } => {
                if self.life.on_resume() {
                    self.restarts += 1;
                    tracing::info!(session = %self.name, restarts = self.restarts, ?delay, "restarting the session");
                    self.out.push(Effect::StartDriver(Some(delay)));
                }
            }
            Input::Retire(reason) => self.retire(reason, now),
            #[cfg(any(test, feature = "fault-injection"))]
            Input::InjectFailure => {
                tracing::warn!(session = %self.name, "fault injected: stopping the session actor");
                self.failure = Some(ActorFailure::ActorStopped);
                self.out.push(Effect::Stop);
            }
            Input::Stopped => self.flush_removals(),
        }
        // Before any answer goes out: a caller may read the pending count as soon as it
        // hears back.
        self.count_outbox();
        std::mem::take(&mut self.out)
    }

    /// Hands back the (emptied) vector [`on`](Self::on) returned, so that the next input
    /// reuses its allocation: one input in, a few effects out, every publish.
    pub(crate) fn recycle(&mut self, mut spent: Vec<Effect<R>>) {
        if self.out.capacity() == 0 {
            spent.clear();
            self.out = spent;
        }
    }

    /// Effects made outside [`on`](Self::on) (by [`new`](Self::new)).
    pub(crate) fn take_effects(&mut self) -> Vec<Effect<R>> {
        std::mem::take(&mut self.out)
    }

    /// The session's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The client id in use (the broker's assigned one, once it gave one).
    pub(crate) fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// The session's state.
    pub(crate) fn state(&self) -> SessionState {
        self.state
    }

    /// What the session may do next.
    pub(crate) fn life(&self) -> &Lifecycle {
        &self.life
    }

    /// Publishes accepted or being accepted (outbox plus group commit in progress).
    pub(crate) fn pending_total(&self) -> usize {
        self.outbox.len() + self.held()
    }

    /// Publishes in the group commit not queued yet ([`Durable::Held`]; those sent early
    /// are in the outbox already).
    fn held(&self) -> usize {
        self.durable.len() - self.sent_early
    }

    /// Publishes in the outbox.
    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// What the status shows.
    pub(crate) fn status_view(&self) -> StatusView<'_> {
        StatusView {
            state: self.state,
            ready: self.life.ready(),
            broker: self.connected_broker.map(|i| self.brokers[i].url.as_str()),
            client_id: &self.client_id,
            broker_limits: &self.broker_limits,
            connected_since: self.connected_since,
            state_since: self.state_since,
            last_error: self.last_error.as_ref(),
            restarts: self.restarts,
            tls_skip_verify: self.skips_tls_verification(),
            subscriptions: self.subscriptions.len(),
            gave_up: self.life.gave_up(),
        }
    }

    /// Why the actor stopped itself, taken once (by the restart).
    fn take_failure(&mut self) -> ActorFailure {
        self.failure.take().unwrap_or(ActorFailure::ActorStopped)
    }

    /// Whether `tls.skip_verify` is on and some broker uses TLS.
    pub(crate) fn skips_tls_verification(&self) -> bool {
        self.opts.tls.as_ref().is_some_and(|t| t.skip_verify)
            && self.brokers.iter().any(|b| b.transport.is_tls())
    }

    fn emit(&mut self, data: EventData) {
        self.out.push(Effect::Emit(data));
    }

    fn answer(&mut self, r: R, res: Result<(), Error>) {
        self.out.push(Effect::Answer(r, res));
    }

    fn transition(&mut self, t: Transition, now: Now) {
        if let Some(new) = self.state.on(t) {
            let old = self.state;
            self.state = new;
            self.state_since = now.wall;
            tracing::info!(session = %self.name, from = %old, to = %new, "session state changed");
            self.emit(EventData::SessionStateChanged { old, new });
        }
    }

    /// Brings the pending and in-flight counters up to date.
    fn count_outbox(&self) {
        self.counters
            .set_outbox(self.outbox.len(), self.outbox.inflight());
    }

    fn on_started(&mut self) {
        match self.life {
            Lifecycle::Closed => return,
            Lifecycle::Running { .. } => self.out.push(Effect::StartDriver(None)),
            Lifecycle::AwaitingVerdict if !self.has_supervisor => {
                // Nobody to decide: restart after the reconnect backoff.
                self.life.on_resume();
                self.restarts += 1;
                let delay = self.opts.reconnect.backoff().base_delay(self.restarts);
                self.out.push(Effect::StartDriver(Some(delay)));
            }
            // The supervisor's verdict comes next; a session that gave up starts nothing.
            Lifecycle::AwaitingVerdict | Lifecycle::DriverGaveUp | Lifecycle::GaveUp(_) => {}
        }
        self.tick_while_queued();
    }

    /// Restarted in place by actix (same outbox, same subscriptions): no driver until
    /// the supervisor, told why, answers `Resume` or `Retire`.
    fn on_restarting(&mut self, now: Now) {
        // The context dropped its timers; the removals it would have handed over go now.
        self.flush_removals();
        self.ticking = false;
        if !self.life.on_restart() {
            return;
        }
        let failure = self.take_failure();
        tracing::warn!(session = %self.name, restarts = self.restarts, failure = ?failure, "session actor stopped unexpectedly");
        if self.has_supervisor {
            self.out.push(Effect::ReportEnd(EndReason::Failed(failure)));
        }
        // The old request channel is gone with its client: everything handed to it is
        // treated as dropped (QoS >= 1 goes back to waiting), and so is every SUBSCRIBE.
        let drained = self.outbox.len();
        if let Some(broker) = self.connected_broker {
            let failure = ConnectionFailure {
                kind: crate::event::ErrorKind::Io,
                broker: self.brokers[broker].url.clone(),
                message: "session actor restarted".into(),
                reason: None,
            };
            self.on_lost(failure, drained, drained, usize::MAX, now);
        } else {
            let keep_ids = !self.opts.connect.clean_session;
            for lost in self.outbox.on_connection_lost(drained, drained, keep_ids) {
                if let Some(r) = lost.responder {
                    let err = self.not_connected();
                    self.answer(r, Err(err));
                }
            }
            self.subscriptions.forget_requests();
        }
        self.transition(Transition::Stopped, now);
    }

    /// Ends the session for good: fails what is pending, stops the driver and the actor
    /// (supervision restarts it idle — a closed session starts nothing — and it goes
    /// away with the last handle).
    fn close(&mut self, now: Now) {
        if !self.life.on_close() {
            return;
        }
        self.out.push(Effect::StopDriver);
        let was_connected = self.connected_broker.take().is_some();
        self.connected_since = None;
        let name = self.name.to_string();
        let closed = || Error::SessionClosed(name.clone());
        let mut answers = Vec::new();
        for e in self.outbox.drain() {
            answers.extend(e.responder.map(|r| (r, Err(closed()))));
        }
        for r in self.subscriptions.close() {
            answers.push((r, Err(closed())));
        }
        for (r, res) in answers {
            self.answer(r, res);
        }
        if was_connected {
            self.emit(EventData::SessionDisconnected { error: None });
        }
        self.transition(Transition::Close, now);
        self.out.push(Effect::Stop);
    }

    /// Stops for good (the supervisor's `Retire`, or giving up with no supervisor): no
    /// driver, state `gave_up`, the event; publishes waiting for a connection fail (a
    /// store keeps its copies for a restart).
    fn retire(&mut self, reason: GiveUpReason, now: Now) {
        if !self.life.on_retire(reason.clone()) {
            return;
        }
        self.out.push(Effect::StopDriver);
        self.connected_broker = None;
        self.connected_since = None;
        tracing::error!(session = %self.name, reason = %reason, "session gave up");
        let entries = self.outbox.drain();
        for e in entries {
            if let Some(r) = e.responder {
                let err = Error::SessionGaveUp {
                    session: self.name.to_string(),
                    reason: reason.clone(),
                };
                self.answer(r, Err(err));
            }
        }
        self.transition(Transition::GaveUp, now);
        self.emit(EventData::SessionGaveUp { reason });
    }

    fn not_connected(&self) -> Error {
        Error::NotConnected {
            session: self.name.to_string(),
        }
    }

    /// Records the time of a connect or disconnect in the stored metadata.
    fn save_meta(&mut self, connected: bool, now: Now) {
        let ms = unix_ms(now.wall);
        if connected {
            self.meta.last_connected_ms = Some(ms);
        } else {
            self.meta.last_disconnected_ms = Some(ms);
        }
        self.put_meta();
    }

    /// Writes the session's metadata (with the client id in use).
    fn put_meta(&mut self) {
        let mut meta = self.meta.clone();
        meta.client_id = self.client_id.to_string();
        self.store(StoreOp::PutMeta(meta), None);
    }
}
