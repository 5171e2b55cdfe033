//! The [`SessionActor`]'s life cycle: construction, status publication, the driver task,
//! `Actor` and `Supervised`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use super::commit::GroupCommit;
use super::handlers::{EndReason, SessionEnded};
use super::io::driver::Driver;
use super::io::link::{BrokerLimits, Link, LinkSpec};
use super::lifecycle::Lifecycle;
use super::outbox::Outbox;
use super::qos2_received::Qos2Received;
use super::state::{SessionState, Transition};
use super::status::{publish_if_changed, StatusView};
use super::subscriptions::Subscriptions;
use super::{SessionActor, SessionParts, DRIVER_EVENTS};
use crate::error::Error;
use crate::event::{ActorFailure, ConnectionFailure, Event, EventData, GiveUpReason};
use crate::message::{Publish, QoS};
use crate::store::unix_ms;

impl SessionActor {
    /// A session actor (not started).
    pub(crate) fn new(mut p: SessionParts) -> Self {
        let limit = p.opts.performance.max_pending_messages;
        let persistent = !p.opts.connect.clean_session;
        let mut outbox = Outbox::new(limit);
        // Packet ids are only resumed by a persistent session, and only within rumqttc's
        // window (a lowered `inflight` sends the others again as new).
        let max_pkid = super::io::link::packet_id_window(&p.opts);
        let ids: std::collections::HashMap<u64, (u16, bool)> = std::mem::take(&mut p.restored_ids)
            .into_iter()
            .filter(|id| persistent && id.pkid <= max_pkid)
            .map(|id| (id.seq, (id.pkid, id.released)))
            .collect();
        let mut resumed = std::collections::HashSet::new();
        for (seq, sp) in std::mem::take(&mut p.restored_outbox) {
            let qos = QoS::try_from(sp.qos).unwrap_or(QoS::AtLeastOnce);
            let publish = Publish::new(sp.topic, sp.payload)
                .qos(qos)
                .retain(sp.retain);
            match ids.get(&seq) {
                // Two entries can never share an id in flight; keep the first.
                Some(&(pkid, released)) if resumed.insert(pkid) => {
                    outbox.push_stored_with_id(publish, seq, pkid, released);
                }
                _ => {
                    outbox.push_stored(publish, seq, None);
                }
            }
        }
        let inbound = persistent.then(|| {
            Arc::new(Qos2Received::new(
                Arc::from(p.opts.name.as_str()),
                std::mem::take(&mut p.restored_inbound),
                p.store.clone(),
            ))
        });
        if !outbox.is_empty() {
            tracing::info!(session = %p.opts.name, count = outbox.len(), "replaying publishes from the store's outbox");
        }
        let meta = std::mem::take(&mut p.meta);
        let mut actor = SessionActor {
            name: Arc::from(p.opts.name.as_str()),
            p,
            state: SessionState::Disconnected,
            life: Lifecycle::new(),
            connected_broker: None,
            connected_since: None,
            state_since: SystemTime::now(),
            last_error: None,
            ever_connected: false,
            client: None,
            driver: None,
            broker_limits: BrokerLimits::default(),
            stream: None,
            subscriptions: Subscriptions::default(),
            outbox,
            inbound,
            on_outbox_empty: None,
            tick: None,
            on_disconnect_written: None,
            durable: GroupCommit::default(),
            recording: false,
            releases: Vec::new(),
            removals: Vec::new(),
            meta,
            restarts: 0,
            failure: None,
        };
        actor.put_meta();
        actor
    }

    pub(super) fn emit(&self, data: EventData) {
        self.p.bus.emit(Event::new(Arc::clone(&self.name), data));
    }

    /// Publishes the status (only when it changed: this runs after every actor message,
    /// publishes included) and the outbox figures.
    pub(super) fn publish_status(&mut self) {
        let view = StatusView {
            state: self.state,
            ready: self.life.ready(),
            broker: self
                .connected_broker
                .map(|i| self.p.brokers[i].url.as_str()),
            client_id: &self.p.client_id,
            broker_limits: &self.broker_limits,
            connected_since: self.connected_since,
            state_since: self.state_since,
            last_error: self.last_error.as_ref(),
            restarts: self.restarts,
            tls_skip_verify: self.skips_tls_verification(),
            subscriptions: self.subscriptions.len(),
            gave_up: self.life.gave_up(),
        };
        publish_if_changed(&self.p.status, &view);
        let pending = self.count_outbox();
        if pending == 0 {
            if let Some(tx) = self.on_outbox_empty.take() {
                let _ = tx.send(());
            }
        }
    }

    /// Starts the one-second tick of a session with queued publishes (if it is not
    /// running): it answers overdue publishes with `PublishTimeout` and retries a publish
    /// left waiting for room in rumqttc's channel (acknowledgements, which are not reported
    /// to the actor, may have filled it). It stops itself once nothing is queued: an idle
    /// session costs its worker no wake-up.
    pub(super) fn tick_while_queued(&mut self, ctx: &mut Context<Self>) {
        if self.tick.is_some() || self.pending_total() == 0 {
            return;
        }
        self.tick = Some(ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            let timeout = act.p.opts.performance.write_timeout;
            for r in act.outbox.take_overdue(Instant::now(), timeout) {
                let _ = r.send(Err(Error::PublishTimeout {
                    session: act.name.to_string(),
                    timeout,
                }));
            }
            act.pump(ctx);
            if act.pending_total() == 0 {
                if let Some(h) = act.tick.take() {
                    ctx.cancel_future(h);
                }
            }
        }));
    }

    /// Brings the pending and in-flight counters up to date; returns the pending count.
    pub(super) fn count_outbox(&self) -> usize {
        let pending = self.outbox.len();
        self.p.counters.set_outbox(pending, self.outbox.inflight());
        pending
    }

    /// Whether `tls.skip_verify` is on and some broker uses TLS.
    pub(super) fn skips_tls_verification(&self) -> bool {
        self.p.opts.tls.as_ref().is_some_and(|t| t.skip_verify)
            && self.p.brokers.iter().any(|b| b.transport.is_tls())
    }

    pub(super) fn transition(&mut self, t: Transition) {
        if let Some(new) = self.state.on(t) {
            let old = self.state;
            self.state = new;
            self.state_since = SystemTime::now();
            tracing::info!(session = %self.name, from = %old, to = %new, "session state changed");
            self.emit(EventData::SessionStateChanged { old, new });
        }
    }

    pub(super) fn start_driver(
        &mut self,
        ctx: &mut Context<Self>,
        initial_delay: Option<Duration>,
    ) {
        let (client, link) = Link::new(LinkSpec {
            opts: Arc::clone(&self.p.opts),
            client_id: Arc::clone(&self.p.client_id),
            brokers: Arc::clone(&self.p.brokers),
            tls: self.p.tls.clone(),
            hold_pubrel: self.p.store.is_some() && !self.p.opts.connect.clean_session,
        });
        if client.takes_packet_ids() && !self.outbox.chooses_ids() {
            self.outbox
                .choose_ids(super::io::link::packet_id_window(&self.p.opts));
        }
        // flume allocates its buffer as events arrive (tokio's bounded channel starts with
        // a block of 32 slots): an idle session keeps almost nothing here.
        let (tx, rx) = flume::bounded(DRIVER_EVENTS);
        let d = Driver {
            session: Arc::clone(&self.name),
            opts: Arc::clone(&self.p.opts),
            brokers: Arc::clone(&self.p.brokers),
            link,
            client: client.clone(),
            events: tx,
            dispatcher: Arc::clone(&self.p.dispatcher),
            counters: Arc::clone(&self.p.counters),
            initial_delay,
            connect_limit: Arc::clone(&self.p.connect_limit),
            last_out: Instant::now(),
            inbound: self.inbound.clone(),
            ack_batch: Vec::new(),
        };
        self.client = Some(client);
        self.driver = Some(tokio::task::spawn_local(d.run()));
        self.stream = Some(ctx.add_stream(rx.into_stream()));
    }

    pub(super) fn stop_driver(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
    }

    pub(super) fn save_meta(&mut self, connected: bool) {
        let now = unix_ms(SystemTime::now());
        if connected {
            self.meta.last_connected_ms = Some(now);
        } else {
            self.meta.last_disconnected_ms = Some(now);
        }
        self.put_meta();
    }

    /// Writes the session's metadata (with the client id in use) through the store worker.
    fn put_meta(&mut self) {
        let Some(worker) = self.store_in_order() else {
            return;
        };
        let mut meta = self.meta.clone();
        meta.client_id = self.p.client_id.to_string();
        let name = Arc::clone(&self.name);
        worker.submit(move |store| {
            if let Err(e) = store.session_meta_put(&name, &meta) {
                tracing::warn!(session = %name, error = %e, "cannot save session metadata");
            }
        });
    }

    /// Ends the session for good: fails what is pending, stops the driver.
    pub(super) fn finish_close(&mut self, ctx: &mut Context<Self>) {
        if !self.life.on_close() {
            return;
        }
        self.stop_driver(ctx);
        let was_connected = self.connected_broker.take().is_some();
        self.connected_since = None;
        for e in self.outbox.drain() {
            if let Some(r) = e.responder {
                let _ = r.send(Err(Error::SessionClosed(self.name.to_string())));
            }
        }
        for r in self.subscriptions.close() {
            let _ = r.send(Err(Error::SessionClosed(self.name.to_string())));
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
        match self.life {
            Lifecycle::Closed => return,
            Lifecycle::Running { .. } => self.start_driver(ctx, None),
            Lifecycle::AwaitingVerdict if self.p.supervisor.is_none() => {
                // Nobody to decide: restart after the reconnect backoff.
                self.life.on_resume();
                self.restarts += 1;
                let delay = self.p.opts.reconnect.backoff().base_delay(self.restarts);
                self.start_driver(ctx, Some(delay));
            }
            // The supervisor's verdict comes next; a session that gave up starts nothing.
            Lifecycle::AwaitingVerdict | Lifecycle::DriverGaveUp | Lifecycle::GaveUp(_) => {}
        }
        self.tick_while_queued(ctx);
        self.publish_status();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flush_removals();
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The context already dropped its streams and timers; cancelling their handles
        // here would cancel the new ones, which reuse the same handle numbers (and the
        // removals they would have handed over go now).
        self.flush_removals();
        self.stream = None;
        self.tick = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
        // Restarted in place by actix (same outbox, same subscriptions), it starts no
        // driver until the supervisor, told why, answers `Resume` or `Retire`.
        if !self.life.on_restart() {
            return;
        }
        tracing::warn!(session = %self.name, restarts = self.restarts, failure = ?self.failure, "session actor stopped unexpectedly");
        let failure = self.failure.take().unwrap_or(ActorFailure::ActorStopped);
        self.report_end(EndReason::Failed(failure));
        // The old request channel is gone with its client: everything handed to it is
        // treated as dropped (QoS >= 1 goes back to waiting).
        let drained = self.outbox.len();
        // Every SUBSCRIBE handed to the old client is gone with it.
        let sent_subs = usize::MAX;
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
            let keep_ids = !self.p.opts.connect.clean_session;
            for lost in self.outbox.on_connection_lost(drained, drained, keep_ids) {
                if let Some(r) = lost.responder {
                    let _ = r.send(Err(Error::NotConnected {
                        session: self.name.to_string(),
                    }));
                }
            }
            self.subscriptions.forget_requests();
        }
        self.transition(Transition::Stopped);
    }
}

impl SessionActor {
    /// Tells the supervisor why this session's run ended.
    pub(super) fn report_end(&self, reason: EndReason) {
        if let Some(sup) = &self.p.supervisor {
            // A control message, one per failure: `do_send` is fine (it cannot wait here).
            sup.do_send(SessionEnded {
                session: Arc::clone(&self.name),
                reason,
            });
        }
    }

    /// Stops for good (the supervisor's `Retire`): no driver, state `gave_up`, the event;
    /// publishes waiting for a connection fail (a store keeps its copies for a restart).
    pub(super) fn retire(&mut self, ctx: &mut Context<Self>, reason: GiveUpReason) {
        if !self.life.on_retire(reason.clone()) {
            return;
        }
        self.stop_driver(ctx);
        self.connected_broker = None;
        self.connected_since = None;
        tracing::error!(session = %self.name, reason = %reason, "session gave up");
        for e in self.outbox.drain() {
            if let Some(r) = e.responder {
                let _ = r.send(Err(Error::SessionGaveUp {
                    session: self.name.to_string(),
                    reason: reason.clone(),
                }));
            }
        }
        self.transition(Transition::GaveUp);
        self.emit(EventData::SessionGaveUp { reason });
        self.publish_status();
    }
}
