//! What [`SessionCore`] does with its driver's reports — connection attempts, the
//! CONNACK, what the connection wrote, the broker's acknowledgements, the end of a
//! connection — and with the subscriptions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Effect, EndReason, Now, SessionCore, Wire};
use crate::error::Error;
use crate::event::{ConnectionFailure, EventData, GiveUpReason};
use crate::message::{QoS, SubscribeOptions};
use crate::reason::ReasonCode;
use crate::session::io::link::{BrokerAck, BrokerLimits, Written};
use crate::session::state::{SessionState, Transition};
use crate::session::subscriptions::SubAckOutcome;

impl<R> SessionCore<R> {
    pub(super) fn on_attempt(&mut self, broker: usize, attempt: u32, now: Now) {
        let b = &self.brokers[broker];
        if b.transport.is_tls() && self.skips_tls_verification() {
            tracing::warn!(session = %self.name, broker = %b.url,
                "TLS certificate verification is disabled (tls.skip_verify): the broker's identity is not checked");
        }
        let broker = b.url.clone();
        self.emit(EventData::SessionConnecting { broker, attempt });
        self.transition(Transition::Attempt, now);
    }

    pub(super) fn on_attempt_failed(&mut self, f: ConnectionFailure) {
        self.counters.record_error(f.kind);
        tracing::warn!(session = %self.name, broker = %f.broker, kind = f.kind.as_str(),
            error = %f.message, "connection attempt failed");
        self.last_error = Some(f.clone());
        self.emit(EventData::SessionDisconnected { error: Some(f) });
    }

    pub(super) fn on_waiting(&mut self, attempt: u32, delay: Duration, now: Now) {
        self.transition(Transition::AttemptFailed, now);
        tracing::info!(session = %self.name, attempt, delay = ?delay, "reconnecting after delay");
        self.emit(EventData::SessionReconnecting { attempt, delay });
    }

    /// The driver stopped trying: the supervisor decides, or with none the session
    /// retires itself.
    pub(super) fn on_driver_gave_up(&mut self, attempts: u32, lost: bool, now: Now) {
        self.life.on_driver_gave_up();
        let error = self.last_error.clone();
        let reason = if lost {
            GiveUpReason::ConnectionLost { error }
        } else {
            GiveUpReason::AttemptsExhausted {
                attempts,
                last_error: error,
            }
        };
        tracing::warn!(session = %self.name, reason = %reason, "giving up connecting");
        if self.has_supervisor {
            self.out.push(Effect::ReportEnd(EndReason::GaveUp(reason)));
        } else {
            self.retire(reason, now);
        }
    }

    /// CONNACK: the state, the event, what a persistent session re-sends first, the
    /// subscriptions, then the queue.
    pub(super) fn on_connected(
        &mut self,
        broker: usize,
        session_present: bool,
        assigned_client_id: Option<String>,
        limits: BrokerLimits,
        now: Now,
        wire: &mut dyn Wire,
    ) {
        if let Some(id) = assigned_client_id {
            tracing::info!(session = %self.name, client_id = %id, "broker assigned a client id");
            self.client_id = Arc::from(id);
        }
        self.broker_limits = limits;
        if self.ever_connected {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let url = self.brokers[broker].url.clone();
        tracing::info!(session = %self.name, broker = %url, session_present, "connected");
        self.connected_broker = Some(broker);
        self.connected_since = Some(now.wall);
        self.emit(EventData::SessionConnected {
            broker: url,
            session_present,
        });
        self.transition(Transition::Connected, now);
        // A persistent session's in-flight publishes first: resumed with their packet
        // ids, or back in the queue as new when the broker kept nothing.
        let resends = self.outbox.on_connected(session_present, now.mono);
        self.out.push(Effect::Resend(resends));
        self.restore_subscriptions(session_present, wire);
        self.ever_connected = true;
        self.save_meta(true, now);
        self.pump(wire);
    }

    /// The connection ended: QoS 0 not written is dropped (its callers hear
    /// `NotConnected`), QoS >= 1 waits for the next connection, SUBSCRIBEs are sent again.
    pub(super) fn on_lost(
        &mut self,
        failure: ConnectionFailure,
        drained_qos1: usize,
        drained_qos0: usize,
        drained_subs: usize,
        now: Now,
    ) {
        self.save_meta(false, now);
        self.counters.record_error(failure.kind);
        tracing::warn!(session = %self.name, broker = %failure.broker, kind = failure.kind.as_str(),
            error = %failure.message, "connection lost");
        self.life.on_disconnected();
        // Held PUBRELs of the connection that ended: a resumed session sends them again.
        self.releases.clear();
        self.connected_broker = None;
        self.connected_since = None;
        self.last_error = Some(failure.clone());
        let keep_ids = !self.opts.connect.clean_session;
        let lost = self
            .outbox
            .on_connection_lost(drained_qos1, drained_qos0, keep_ids);
        if !lost.is_empty() {
            self.counters
                .dropped_on_disconnect
                .fetch_add(lost.len() as u64, Ordering::Relaxed);
            tracing::warn!(session = %self.name, dropped = lost.len(),
                "QoS 0 publishes not written before the connection ended were dropped");
        }
        for lost in lost {
            if let Some(r) = lost.responder {
                let err = self.not_connected();
                self.answer(r, Err(err));
            }
        }
        // SUBSCRIBEs that were sent (or dropped by rumqttc) are re-sent on the next
        // connect; their callers already know the subscription is registered.
        for r in self.subscriptions.on_lost(drained_subs) {
            self.answer(r, Ok(()));
        }
        self.emit(EventData::SessionDisconnected {
            error: Some(failure),
        });
        if self.opts.connect.auto_reconnect {
            self.transition(Transition::Lost, now);
        } else {
            // The driver gives up next; the supervisor retires the session.
            self.transition(Transition::Stopped, now);
        }
    }

    pub(super) fn on_written(&mut self, out: Written, now: Now, wire: &mut dyn Wire) {
        match out {
            Written::Publish(pkid) => {
                if let Some(e) = self.outbox.on_written(pkid, now.mono) {
                    self.complete(e, now);
                } else if pkid != 0 && !self.outbox.chooses_ids() {
                    // rumqttc chose the id (MQTT 5): known only now. On MQTT 3.1.1 the
                    // outbox chose it, and recorded it before the hand-over.
                    self.record_packet_id(pkid);
                }
            }
            Written::PubRel(pkid) if self.outbox.on_released(pkid) => {
                self.record_packet_id(pkid);
            }
            Written::AwaitAck(pkid) => self.outbox.on_collision(pkid),
            Written::Subscribe(pkid) => self.subscriptions.on_written(pkid),
            _ => {}
        }
        self.pump(wire);
    }

    pub(super) fn on_ack(&mut self, ack: BrokerAck, now: Now, wire: &mut dyn Wire) {
        match ack {
            BrokerAck::Pub { pkid, refused } => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    match refused {
                        None => self.complete(e, now),
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
                self.pump(wire);
            }
            BrokerAck::Comp(pkid) => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    self.complete(e, now);
                }
                self.pump(wire);
            }
            BrokerAck::Rec(pkid) => self.on_pubrec(pkid, wire),
            BrokerAck::Sub { pkid, codes } => self.on_suback(pkid, codes),
        }
    }

    /// A persistent session with a store records the packet id an outbox entry went out
    /// with (and its PUBREC), so that a restarted process resumes it under that id.
    fn record_packet_id(&mut self, pkid: u16) {
        if self.opts.connect.clean_session {
            return;
        }
        let Some(id) = self.outbox.entry_id(pkid) else {
            return;
        };
        let stored = crate::store::StoredPacketId {
            seq: id.seq,
            pkid: id.pkid,
            released: id.released,
        };
        self.store(
            super::StoreOp::SetPacketIds {
                ids: vec![stored],
                flush: id.exactly_once,
            },
            None,
        );
    }

    /// After a CONNACK: UNSUBSCRIBE what a persistent session no longer wants, re-send
    /// the subscriptions the broker does not have; ready at once when there are none.
    fn restore_subscriptions(&mut self, session_present: bool, wire: &mut dyn Wire) {
        let plan = self.subscriptions.on_connected(
            session_present,
            self.opts.connect.resume_subscriptions,
            self.ever_connected,
        );
        if plan.dropped > 0 {
            tracing::warn!(session = %self.name, count = plan.dropped,
                "broker kept no session and resume_subscriptions is off: subscriptions dropped");
        }
        if !wire.attached() {
            return;
        }
        for f in &plan.unsubscribe {
            tracing::info!(session = %self.name, filter = %f, "unsubscribing a filter no longer wanted");
            if !wire.unsubscribe(f.as_str()) {
                tracing::warn!(session = %self.name, filter = %f, "cannot queue UNSUBSCRIBE: the request channel is full");
            }
        }
        if plan.subscribe.is_empty() {
            self.mark_ready();
            return;
        }
        if wire.subscribe(&plan.subscribe) {
            self.subscriptions.restore_sent(&plan);
        } else {
            tracing::error!(session = %self.name, "cannot queue SUBSCRIBE (the request channel is full); will retry on reconnect");
        }
    }

    fn mark_ready(&mut self) {
        if self.life.on_ready(self.state == SessionState::Connected) {
            let subscriptions = self.subscriptions.len();
            tracing::info!(session = %self.name, subscriptions, "session ready");
            self.emit(EventData::SessionReady { subscriptions });
        }
    }

    fn on_suback(&mut self, pkid: u16, codes: Vec<Result<QoS, ReasonCode>>) {
        match self.subscriptions.on_suback(pkid, codes) {
            SubAckOutcome::Unknown => {}
            SubAckOutcome::Restored { refused } => {
                for (filter, reason) in refused {
                    tracing::warn!(session = %self.name, filter = %filter, reason = %reason, "broker refused subscription");
                }
                self.mark_ready();
            }
            SubAckOutcome::Single {
                filter,
                responder,
                refused,
            } => {
                let res = match refused {
                    None => Ok(()),
                    Some(reason) => {
                        tracing::warn!(session = %self.name, filter = %filter, reason = %reason, "broker refused subscription");
                        Err(Error::SubscribeRefused {
                            session: self.name.to_string(),
                            filter,
                            reason,
                        })
                    }
                };
                if let Some(r) = responder {
                    self.answer(r, res);
                }
            }
        }
    }

    /// Adds a subscription: sent at once when connected (answered on SUBACK), else at
    /// the next connect (answered now).
    pub(super) fn subscribe(
        &mut self,
        filter: String,
        qos: QoS,
        options: SubscribeOptions,
        responder: R,
        wire: &mut dyn Wire,
    ) {
        if self.life.is_closed() {
            let err = Error::SessionClosed(self.name.to_string());
            self.answer(responder, Err(err));
            return;
        }
        let unchanged = self.subscriptions.insert(&filter, qos, options);
        if unchanged || self.state != SessionState::Connected || !wire.attached() {
            self.answer(responder, Ok(()));
            return;
        }
        if wire.subscribe(&[(filter.clone(), qos, options)]) {
            self.subscriptions.single_sent(filter, Some(responder));
        } else {
            tracing::warn!(session = %self.name, filter = %filter,
                "cannot queue SUBSCRIBE now (the request channel is full); it is sent at the next connect");
            self.answer(responder, Ok(()));
        }
    }

    /// Removes a subscription: UNSUBSCRIBE at once when connected; a persistent
    /// session's broker keeps subscriptions while we are away, so then at the next
    /// connect.
    pub(super) fn unsubscribe(&mut self, filter: &str, wire: &mut dyn Wire) -> Result<(), Error> {
        if self.life.is_closed() {
            return Err(Error::SessionClosed(self.name.to_string()));
        }
        let connected = self.state == SessionState::Connected;
        let was_sent = self.subscriptions.remove(filter, connected);
        let persistent = !self.opts.connect.clean_session;
        if was_sent || persistent {
            if connected && wire.attached() {
                if !wire.unsubscribe(filter) {
                    tracing::warn!(session = %self.name, filter = %filter, "cannot queue UNSUBSCRIBE: the request channel is full");
                }
            } else if persistent {
                self.subscriptions.unsubscribe_later(filter);
            }
        }
        Ok(())
    }
}
