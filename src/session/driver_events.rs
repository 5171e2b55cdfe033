//! What the [`SessionActor`] does with its driver's events: connection progress,
//! acknowledgements of its publishes and subscriptions, and the end of a connection.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;

use super::handlers::EndReason;
use super::io::driver::DriverEvent;
use super::io::link::{BrokerAck, Written};
use super::state::{SessionState, Transition};
use super::subscriptions::SubAckOutcome;
use super::SessionActor;
use crate::error::Error;
use crate::event::{ConnectionFailure, EventData, GiveUpReason};
use crate::message::QoS;
use crate::reason::ReasonCode;

impl StreamHandler<DriverEvent> for SessionActor {
    fn handle(&mut self, ev: DriverEvent, ctx: &mut Context<Self>) {
        match ev {
            DriverEvent::Written(out) => self.on_written(ctx, out),
            DriverEvent::Ack(BrokerAck::Pub { pkid, refused }) => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    match refused {
                        None => self.complete(ctx, e),
                        Some(reason) => {
                            tracing::warn!(session = %self.name, topic = %e.publish.topic, reason = %reason,
                                "broker refused a publish");
                            let err = Error::PublishRefused {
                                session: self.name.to_string(),
                                topic: e.publish.topic.clone(),
                                reason,
                            };
                            self.fail(ctx, e, err);
                        }
                    }
                }
                self.pump(ctx);
            }
            DriverEvent::Ack(BrokerAck::Comp(pkid)) => {
                if let Some(e) = self.outbox.on_acked(pkid) {
                    self.complete(ctx, e);
                }
                self.pump(ctx);
            }
            DriverEvent::Ack(BrokerAck::Rec(pkid)) => self.on_pubrec(ctx, pkid),
            DriverEvent::Ack(BrokerAck::Sub { pkid, codes }) => self.on_suback(pkid, codes),
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
            DriverEvent::GaveUp { attempts, lost } => {
                self.life.on_driver_gave_up();
                let reason = if lost {
                    GiveUpReason::ConnectionLost {
                        error: self.last_error.clone(),
                    }
                } else {
                    GiveUpReason::AttemptsExhausted {
                        attempts,
                        last_error: self.last_error.clone(),
                    }
                };
                tracing::warn!(session = %self.name, reason = %reason, "giving up connecting");
                if self.p.supervisor.is_some() {
                    self.report_end(EndReason::GaveUp(reason));
                } else {
                    self.retire(ctx, reason);
                }
            }
            DriverEvent::Connected {
                broker,
                session_present,
                assigned_client_id,
                limits,
                resume,
            } => {
                if let Some(id) = assigned_client_id {
                    tracing::info!(session = %self.name, client_id = %id, "broker assigned a client id");
                    self.p.client_id = Arc::from(id);
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
                // A persistent session's in-flight publishes first: resumed with their
                // packet ids, or back in the queue as new when the broker kept nothing.
                let resends = self.outbox.on_connected(session_present, Instant::now());
                if let Some(tx) = resume {
                    let _ = tx.send(resends);
                }
                self.restore_subscriptions(session_present);
                self.ever_connected = true;
                self.save_meta(true);
                self.pump(ctx);
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
        if self.life.expects_driver() {
            tracing::error!(session = %self.name, "session driver ended unexpectedly; restarting the actor");
            self.failure = Some(crate::event::ActorFailure::DriverEnded);
            ctx.stop();
        }
    }
}

impl SessionActor {
    fn on_written(&mut self, ctx: &mut Context<Self>, out: Written) {
        match out {
            Written::Publish(pkid) => {
                if let Some(e) = self.outbox.on_written(pkid, Instant::now()) {
                    self.complete(ctx, e);
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
            Written::Disconnect => {
                if let Some(tx) = self.on_disconnect_written.take() {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
        self.pump(ctx);
    }

    /// A persistent session with a store records the packet id an outbox entry went out
    /// with (and its PUBREC), so that a restarted process resumes it under that id.
    fn record_packet_id(&mut self, pkid: u16) {
        if self.p.opts.connect.clean_session {
            return;
        }
        // After the removals (`store_in_order`): the id may have been freed by one.
        let (Some(worker), Some(id)) = (self.store_in_order(), self.outbox.entry_id(pkid)) else {
            return;
        };
        let name = Arc::clone(&self.name);
        let stored = crate::store::StoredPacketId {
            seq: id.seq,
            pkid: id.pkid,
            released: id.released,
        };
        worker.submit(move |store| {
            if let Err(e) = store.outbox_set_packet_id(&name, stored, id.exactly_once) {
                tracing::error!(session = %name, error = %e, "cannot record a publish's packet id");
            }
        });
    }

    /// After a CONNACK: UNSUBSCRIBE what a persistent session no longer wants, re-send
    /// the subscriptions the broker does not have; ready at once when there are none.
    fn restore_subscriptions(&mut self, session_present: bool) {
        let plan = self.subscriptions.on_connected(
            session_present,
            self.p.opts.connect.resume_subscriptions,
            self.ever_connected,
        );
        if plan.dropped > 0 {
            tracing::warn!(session = %self.name, count = plan.dropped,
                "broker kept no session and resume_subscriptions is off: subscriptions dropped");
        }
        let Some(client) = &self.client else { return };
        for f in &plan.unsubscribe {
            tracing::info!(session = %self.name, filter = %f, "unsubscribing a filter no longer wanted");
            if let Err(e) = client.unsubscribe_now(f.as_str()) {
                tracing::warn!(session = %self.name, filter = %f, error = %e, "cannot queue UNSUBSCRIBE");
            }
        }
        if plan.subscribe.is_empty() {
            self.mark_ready();
            return;
        }
        match client.subscribe_now(&plan.subscribe) {
            Ok(()) => self.subscriptions.restore_sent(&plan),
            Err(e) => {
                tracing::error!(session = %self.name, error = %e, "cannot queue SUBSCRIBE; will retry on reconnect");
            }
        }
    }

    fn mark_ready(&mut self) {
        if self.life.on_ready(self.state == SessionState::Connected) {
            tracing::info!(session = %self.name, subscriptions = self.subscriptions.len(), "session ready");
            self.emit(EventData::SessionReady {
                subscriptions: self.subscriptions.len(),
            });
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
                    let _ = r.send(res);
                }
            }
        }
    }

    pub(super) fn on_lost(
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
        self.life.on_disconnected();
        // Held PUBRELs of the connection that ended: a resumed session sends them again.
        self.releases.clear();
        self.connected_broker = None;
        self.connected_since = None;
        self.last_error = Some(failure.clone());
        let keep_ids = !self.p.opts.connect.clean_session;
        let lost = self
            .outbox
            .on_connection_lost(drained_qos1, drained_qos0, keep_ids);
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
        for r in self.subscriptions.on_lost(drained_subs) {
            let _ = r.send(Ok(()));
        }
        self.emit(EventData::SessionDisconnected {
            error: Some(failure),
        });
        if self.p.opts.connect.auto_reconnect {
            self.transition(Transition::Lost);
        } else {
            // The driver gives up next; the supervisor retires the session.
            self.transition(Transition::Stopped);
        }
    }
}
