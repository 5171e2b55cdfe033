//! The [`SessionActor`]'s publishing side: feeding the outbox into rumqttc within the
//! in-flight window, completing publishes on their acknowledgement, and the group commit
//! of QoS >= 1 publishes to the store.

use std::sync::Arc;

use actix::prelude::*;

use super::state::SessionState;
use super::{outbox, Completion, Responder, SessionActor};
use crate::error::Error;
use crate::message::{Publish, QoS};
use crate::store::{StoreWorker, StoredPublish};

impl SessionActor {
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

    /// Whether the outbox's packet ids go to the store before their PUBLISH is handed to
    /// rumqttc (MQTT 3.1.1, where the outbox chooses them, on a persistent session with a
    /// store): a restarted process then always knows the id the broker may hold.
    fn records_ids_first(&self) -> bool {
        self.p.store.is_some() && !self.p.opts.connect.clean_session && self.outbox.chooses_ids()
    }

    /// Hands waiting publishes to rumqttc while connected and within the in-flight limit.
    /// When the ids are recorded first, the publishes handed now go to rumqttc once their
    /// ids are on disk (one store write, one flush when one of them is QoS 2), and
    /// nothing is handed after them until then, so the order holds.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.state != SessionState::Connected || self.client.is_none() {
            return;
        }
        self.retry_releases();
        if self.recording {
            return;
        }
        let record = self.records_ids_first();
        let max = self.inflight_cap();
        let max_packet = self.broker_limits.maximum_packet_size;
        let mut batch: Vec<u64> = Vec::new();
        while let Some((id, size)) = self
            .outbox
            .peek_sendable(max)
            .map(|(id, p)| (id, p.packet_len()))
        {
            if let Some(limit) = max_packet {
                if size > limit as usize {
                    // The broker would close the connection over it [MQTT-3.1.2-24].
                    if let Some(e) = self.outbox.remove_waiting(id) {
                        tracing::warn!(session = %self.name, topic = %e.publish.topic, size, max = limit,
                            "publish larger than the broker's maximum packet size refused");
                        self.fail(
                            ctx,
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
            let Some(pkid) = self.outbox.assign_id(id) else {
                // No packet id free: the next acknowledgement frees one and pumps again.
                break;
            };
            if !batch.is_empty() || (record && pkid != 0) {
                self.outbox.mark_handed(id);
                batch.push(id);
                continue;
            }
            let (Some(client), Some(p)) = (&self.client, self.outbox.publish_of(id)) else {
                return;
            };
            if client.publish_now(p, pkid) {
                self.outbox.mark_handed(id);
            } else {
                // Channel full: the next processed request frees a slot and pumps again.
                break;
            }
        }
        if !batch.is_empty() {
            self.record_then_send(ctx, batch);
        }
    }

    /// Records the packet ids of the handed entries `batch` (oldest first), then gives
    /// them to rumqttc; they go back to waiting if the ids cannot be recorded.
    fn record_then_send(&mut self, ctx: &mut Context<Self>, batch: Vec<u64>) {
        // After the removals (`store_in_order`): a packet id freed by an acknowledgement
        // may be in `batch` again, and the store must not hold it for two publishes.
        let Some(store) = self.store_in_order() else {
            self.send_handed(&batch);
            return;
        };
        let ids: Vec<crate::store::StoredPacketId> = batch
            .iter()
            .filter_map(|id| self.outbox.stored_id(*id))
            .filter(|e| e.pkid != 0)
            .map(|e| crate::store::StoredPacketId {
                seq: e.seq,
                pkid: e.pkid,
                released: false,
            })
            .collect();
        let flush = batch
            .iter()
            .filter_map(|id| self.outbox.stored_id(*id))
            .any(|e| e.exactly_once);
        let name = self.name.to_string();
        self.recording = true;
        // One flush for the batch: the store worker commits a group's flushes once.
        let write = store.run(move |store| {
            for id in ids {
                store.outbox_set_packet_id(&name, id, flush)?;
            }
            Ok::<(), crate::store::StoreError>(())
        });
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.recording = false;
            match res {
                Ok(Ok(())) => act.send_handed(&batch),
                Ok(Err(e)) => {
                    tracing::error!(session = %act.name, error = %e,
                        "cannot record the packet ids of publishes; they wait");
                    act.outbox.return_handed(&batch);
                }
                Err(_) => act.outbox.return_handed(&batch),
            }
            act.pump(ctx);
            act.publish_status();
        }));
    }

    /// Gives the handed entries `batch` (their ids recorded) to rumqttc, in order; what
    /// its channel has no room for waits again.
    fn send_handed(&mut self, batch: &[u64]) {
        for (i, &id) in batch.iter().enumerate() {
            if !self.outbox.is_handed(id) {
                continue;
            }
            let pkid = self.outbox.stored_id(id).map_or(0, |e| e.pkid);
            let pkid = if self
                .outbox
                .publish_of(id)
                .is_some_and(|p| p.qos == QoS::AtMostOnce)
            {
                0
            } else {
                pkid
            };
            let sent = match (&self.client, self.outbox.publish_of(id)) {
                (Some(client), Some(p)) => client.publish_now(p, pkid),
                _ => false,
            };
            if !sent {
                self.outbox.return_handed(&batch[i..]);
                return;
            }
        }
    }

    /// The broker's PUBREC for `pkid` came and its PUBREL is held (see `BrokerAck::Rec`): the
    /// `released` flag goes to disk (flushed), then the PUBREL to the broker. Until then a
    /// restarted process re-sends the PUBLISH (DUP 1), which the broker still holds.
    pub(super) fn on_pubrec(&mut self, ctx: &mut Context<Self>, pkid: u16) {
        let id = self.outbox.entry_id(pkid);
        let (Some(id), Some(store)) = (id, self.store_in_order()) else {
            self.outbox.on_released(pkid);
            self.release(pkid);
            return;
        };
        let name = self.name.to_string();
        let stored = crate::store::StoredPacketId {
            seq: id.seq,
            pkid,
            released: true,
        };
        let write = store.run(move |store| store.outbox_set_packet_id(&name, stored, true));
        ctx.spawn(write.into_actor(self).map(move |res, act, _| {
            if !matches!(res, Ok(Ok(()))) {
                tracing::error!(session = %act.name, pkid,
                    "cannot record a PUBREC; releasing the publish all the same");
            }
            act.outbox.on_released(pkid);
            act.release(pkid);
        }));
    }

    /// Sends the held PUBREL for `pkid` (or keeps it to retry).
    fn release(&mut self, pkid: u16) {
        if let Some(client) = &self.client {
            if !client.release(pkid) {
                self.releases.push(pkid);
            }
        }
    }

    fn retry_releases(&mut self) {
        let Some(client) = &self.client else { return };
        while let Some(&pkid) = self.releases.first() {
            if !client.release(pkid) {
                return;
            }
            self.releases.remove(0);
        }
    }

    /// Ends an entry with an error the broker (or its limits) gave: it is not retried, so
    /// it also leaves the store.
    pub(super) fn fail(
        &mut self,
        ctx: &mut Context<Self>,
        entry: outbox::Entry<Responder>,
        err: Error,
    ) {
        self.remove_stored(ctx, entry.seq);
        self.count_outbox();
        if let Some(r) = entry.responder {
            let _ = r.send(Err(err));
        }
    }

    pub(super) fn complete(&mut self, ctx: &mut Context<Self>, entry: outbox::Entry<Responder>) {
        self.remove_stored(ctx, entry.seq);
        self.count_outbox();
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

    /// Takes a publish that was acknowledged (or refused for good) out of the store's
    /// outbox, through the store worker (after its write). Not flushed: losing this
    /// removal in a crash only means one duplicate later. The removals of one burst of
    /// acknowledgements go to the store worker as one job, after the actor handled the
    /// burst: one hand-over (and wake-up of the worker) for many, not one each.
    fn remove_stored(&mut self, ctx: &mut Context<Self>, seq: Option<u64>) {
        let (Some(_), Some(seq)) = (&self.p.store, seq) else {
            return;
        };
        self.removals.push(seq);
        if self.removals.len() == 1 {
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, _| act.flush_removals()));
        }
        // Every other store write of this session goes through `store_in_order`, which
        // hands these over first: the store worker sees them in the order they happened.
    }

    /// The store worker, for a write of this session: the removals collected so far are
    /// handed to it first, so that it sees every write of the session in the order it
    /// happened (a packet id freed by an acknowledgement is never on disk for two
    /// publishes). Every store write of the session goes through here; `None` without a
    /// store.
    pub(super) fn store_in_order(&mut self) -> Option<StoreWorker> {
        self.flush_removals();
        self.p.store.clone()
    }

    /// Hands the removals collected by [`remove_stored`](Self::remove_stored) to the
    /// store worker (also when the actor stops).
    pub(super) fn flush_removals(&mut self) {
        let Some(worker) = &self.p.store else {
            return;
        };
        if self.removals.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.removals);
        let name = Arc::clone(&self.name);
        worker.submit(move |store| {
            for seq in seqs {
                if let Err(e) = store.outbox_remove(&name, seq) {
                    tracing::error!(session = %name, error = %e, "cannot remove a publish from the store's outbox");
                }
            }
        });
    }

    /// Queues a publish that [`admit`](Self::admit) let in. With a store a QoS >= 1
    /// publish is written (group commit) before it is queued. `accepted` hears once it is
    /// queued (durable), `done` once the broker acknowledged it.
    pub(super) fn queue_admitted(
        &mut self,
        ctx: &mut Context<Self>,
        publish: Publish,
        c: Completion,
    ) {
        if publish.qos != QoS::AtMostOnce && self.p.store.is_some() {
            self.durable.push((publish, c));
            self.commit_durable(ctx);
            self.tick_while_queued(ctx);
            return;
        }
        match self.outbox.push(publish, c.done) {
            Ok(_) => {
                if let Some(tx) = c.accepted {
                    // The caller may read the pending count as soon as it hears back.
                    self.count_outbox();
                    let _ = tx.send(Ok(()));
                }
            }
            Err((_, done)) => {
                let limit = self.p.opts.performance.max_pending_messages;
                Completion {
                    accepted: c.accepted,
                    done,
                }
                .refuse(Error::QueueFull {
                    session: self.name.to_string(),
                    limit,
                });
            }
        }
        self.pump(ctx);
        self.tick_while_queued(ctx);
        self.publish_status();
    }

    /// Whether a publish may come in: refused when the session is closed or gave up, for
    /// QoS 0 while disconnected, for a bad topic or size, or past `max_pending_messages`.
    pub(super) fn admit(&self, publish: &Publish) -> Result<(), Error> {
        let session = || self.name.to_string();
        if self.life.is_closed() {
            return Err(Error::SessionClosed(session()));
        }
        if let Some(reason) = self.life.gave_up() {
            return Err(Error::SessionGaveUp {
                session: session(),
                reason: reason.clone(),
            });
        }
        // Checked by the handle too; an application may send the message directly.
        crate::topic::validate_topic_name(&publish.topic)?;
        let max = self.p.opts.performance.max_message_size;
        if publish.payload.len() > max {
            return Err(Error::PayloadTooLarge {
                session: session(),
                size: publish.payload.len(),
                max,
            });
        }
        if publish.qos == QoS::AtMostOnce && self.state != SessionState::Connected {
            return Err(Error::NotConnected { session: session() });
        }
        let limit = self.p.opts.performance.max_pending_messages;
        if self.pending_total() >= limit {
            return Err(Error::QueueFull {
                session: session(),
                limit,
            });
        }
        Ok(())
    }

    /// Publishes accepted or being accepted (outbox plus group commit in progress).
    pub(super) fn pending_total(&self) -> usize {
        self.outbox.len() + self.durable.len()
    }

    /// Writes the waiting batch of QoS >= 1 publishes to the store in one group commit
    /// (one fsync, on the store worker), then queues them and reports them accepted.
    pub(super) fn commit_durable(&mut self, ctx: &mut Context<Self>) {
        // Only a session with a store fills `durable` (see `queue_admitted`).
        let Some(batch) = self.durable.start() else {
            return;
        };
        let Some(store) = self.store_in_order() else {
            return;
        };
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
        let write = store.run(move |store| store.outbox_push_many(&session, &stored));
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.durable.finish();
            match res {
                Ok(Ok(seqs)) => {
                    let mut accepted = Vec::with_capacity(batch.len());
                    for ((publish, c), seq) in batch.into_iter().zip(seqs) {
                        act.outbox.push_stored(publish, seq, c.done);
                        accepted.extend(c.accepted);
                    }
                    // The callers may read the pending count as soon as they hear back.
                    act.count_outbox();
                    for tx in accepted {
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(session = %act.name, error = %e, "cannot write publishes to the store");
                    let msg = e.to_string();
                    for (_, c) in batch {
                        c.refuse(Error::StoreWrite(msg.clone()));
                    }
                }
                Err(_) => {
                    for (_, c) in batch {
                        c.refuse(Error::StoreWrite("store worker gone".into()));
                    }
                }
            }
            act.pump(ctx);
            act.publish_status();
            act.commit_durable(ctx);
        }));
    }
}

impl Completion {
    /// The publish was not accepted: the caller hears why (whoever waits for acceptance,
    /// or else for completion; never both, so one refusal is reported once).
    pub(super) fn refuse(self, err: Error) {
        if let Some(tx) = self.accepted.or(self.done) {
            let _ = tx.send(Err(err));
        }
    }
}
