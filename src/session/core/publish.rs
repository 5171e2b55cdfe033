//! The publishing side of [`SessionCore`]: admission, the group commit of QoS >= 1
//! publishes to the store, the outbox into the wire within the in-flight window, the
//! recording of packet ids and PUBRECs, completion, and the store's removals.

use super::{Completion, Durable, Effect, Now, SessionCore, StoreOp, Then, Wire};
use crate::error::Error;
use crate::message::{Publish, QoS};
use crate::session::lane::LaneTicket;
use crate::session::outbox::Entry;
use crate::session::state::SessionState;
use crate::store::{StoredPacketId, StoredPublish};

impl<R> SessionCore<R> {
    /// Takes a publish in, the one way for every kind of publish: refused (for the caller
    /// waiting for acceptance, or else for completion) when it cannot be admitted or its
    /// lane is held — a refusal that may pass holds the lane — otherwise queued.
    pub(super) fn take_publish(
        &mut self,
        publish: Publish,
        c: Completion<R>,
        lane: Option<LaneTicket>,
        wire: &mut dyn Wire,
    ) {
        let refusal = match &lane {
            Some(ticket) if ticket.is_held() => Some(Error::LaneHeld(self.name.to_string())),
            _ => self.admit(&publish).err(),
        };
        if let Some(e) = refusal {
            if let Some(ticket) = lane.filter(|_| !e.is_permanent()) {
                ticket.hold();
            }
            self.refuse(c, e);
            return;
        }
        self.queue_admitted(publish, c, wire);
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
        let max = self.opts.performance.max_message_size;
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
        let limit = self.opts.performance.max_pending_messages;
        if self.pending_total() >= limit {
            return Err(Error::QueueFull {
                session: session(),
                limit,
            });
        }
        Ok(())
    }

    /// The publish was not accepted: the caller hears why (whoever waits for acceptance,
    /// or else for completion; never both, so one refusal is reported once).
    fn refuse(&mut self, c: Completion<R>, err: Error) {
        if let Some(r) = c.accepted.or(c.done) {
            self.answer(r, Err(err));
        }
    }

    /// Queues an admitted publish. With a store a QoS >= 1 publish is written (group
    /// commit): a QoS 2 one, or any of a persistent session, before it is queued; a
    /// QoS 1 one of a clean session is queued at once and written meanwhile
    /// ([`Durable`]). `accepted` hears once it is durable (without a store: queued),
    /// `done` once the broker acknowledged it.
    fn queue_admitted(&mut self, publish: Publish, c: Completion<R>, wire: &mut dyn Wire) {
        let durable = publish.qos != QoS::AtMostOnce && self.has_store;
        if durable && !self.sends_before_written(&publish) {
            self.durable.push(Durable::Held(publish, c));
            self.commit_durable();
            self.tick_while_queued();
            return;
        }
        match self.outbox.push(publish, c.done) {
            Ok(id) if durable => {
                self.durable.push(Durable::Sent {
                    id,
                    accepted: c.accepted,
                    written: false,
                });
                self.sent_early += 1;
                self.commit_durable();
            }
            Ok(_) => {
                if let Some(r) = c.accepted {
                    self.answer(r, Ok(()));
                }
            }
            Err((_, done)) => {
                let limit = self.opts.performance.max_pending_messages;
                let err = Error::QueueFull {
                    session: self.name.to_string(),
                    limit,
                };
                self.refuse(
                    Completion {
                        accepted: c.accepted,
                        done,
                    },
                    err,
                );
            }
        }
        self.pump(wire);
        self.tick_while_queued();
    }

    /// Whether a QoS >= 1 publish (with a store) is queued before it is written
    /// ([`Durable::Sent`]): QoS 1, a clean session (no packet ids recorded before the
    /// wire), and nothing held in the group commit ahead of it.
    fn sends_before_written(&self, publish: &Publish) -> bool {
        publish.qos == QoS::AtLeastOnce && self.opts.connect.clean_session && self.held() == 0
    }

    /// Writes the waiting batch of QoS >= 1 publishes to the store in one group commit
    /// (one flush); they are reported accepted when it is done, and the held ones queued.
    /// A publish sent early that completed before the write started is not written.
    fn commit_durable(&mut self) {
        let Some(batch) = self.durable.start() else {
            return;
        };
        let outbox = &self.outbox;
        let stored: Vec<StoredPublish> = batch
            .iter_mut()
            .filter_map(|d| match d {
                Durable::Held(p, _) => Some(&*p),
                Durable::Sent { id, written, .. } => {
                    let p = outbox.publish_of(*id);
                    *written = p.is_some();
                    p
                }
            })
            .map(|p| StoredPublish {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: p.qos.as_u8(),
                retain: p.retain,
            })
            .collect();
        if stored.is_empty() {
            // Every publish of the batch completed already: nothing to write.
            self.committed(Ok(Vec::new()));
            return;
        }
        self.store(StoreOp::PushMany(stored), Some(Then::Committed));
    }

    /// The group commit's write ended: the held publishes are queued (or refused), those
    /// sent early learn their key in the store (or, completed meanwhile, leave it again),
    /// and whoever waits for acceptance hears.
    fn committed(&mut self, result: Result<Vec<u64>, String>) {
        let batch = self.durable.finish();
        // A failed write gives no sequence numbers: every written publish then lacks one.
        let (seqs, failure) = match result {
            Ok(seqs) => (seqs, String::new()),
            Err(e) => {
                tracing::error!(session = %self.name, error = %e, "cannot write publishes to the store");
                (Vec::new(), e)
            }
        };
        let refusal = || Error::StoreWrite(failure.clone());
        let mut seqs = seqs.into_iter();
        let mut accepted = Vec::new();
        for d in batch {
            match d {
                Durable::Held(publish, c) => match seqs.next() {
                    Some(seq) => {
                        self.outbox.push_stored(publish, seq, c.done);
                        accepted.extend(c.accepted.map(|r| (r, Ok(()))));
                    }
                    None => self.refuse(c, refusal()),
                },
                Durable::Sent {
                    id,
                    accepted: r,
                    written,
                } => {
                    self.sent_early -= 1;
                    // Only the written ones have a sequence number.
                    let answer = match written.then(|| seqs.next()) {
                        None => Ok(()),
                        Some(Some(seq)) => {
                            if !self.outbox.set_seq(id, seq) {
                                self.remove_stored(Some(seq));
                            }
                            Ok(())
                        }
                        // Not durable; still queued, and still answered on completion.
                        Some(None) => Err(refusal()),
                    };
                    accepted.extend(r.map(|r| (r, answer)));
                }
            }
        }
        for (r, answer) in accepted {
            self.answer(r, answer);
        }
    }

    /// A store write the core waited for ended.
    pub(super) fn on_stored(
        &mut self,
        then: Then,
        result: Result<Vec<u64>, String>,
        wire: &mut dyn Wire,
    ) {
        match then {
            Then::Committed => {
                self.committed(result);
                self.pump(wire);
                self.commit_durable();
            }
            Then::IdsRecorded => {
                let batch = self.recording.take().unwrap_or_default();
                match result {
                    Ok(_) => self.send_handed(&batch, wire),
                    Err(e) => {
                        tracing::error!(session = %self.name, error = %e,
                            "cannot record the packet ids of publishes; they wait");
                        self.outbox.return_handed(&batch);
                    }
                }
                self.pump(wire);
            }
            Then::Released(pkid) => {
                if let Err(e) = result {
                    tracing::error!(session = %self.name, pkid, error = %e,
                        "cannot record a PUBREC; releasing the publish all the same");
                }
                self.outbox.on_released(pkid);
                self.release(pkid, wire);
            }
        }
    }

    /// QoS >= 1 publishes the outbox may have in flight: `performance.inflight`, capped
    /// below the broker's Receive Maximum (one slot is kept free so that rumqttc, whose
    /// window is the same, never stops reading the acknowledgements we queue).
    fn inflight_cap(&self) -> usize {
        let own = usize::from(self.opts.performance.inflight);
        match self.broker_limits.receive_maximum {
            Some(r) => own.min(usize::from(r).saturating_sub(1).max(1)),
            None => own,
        }
    }

    /// Whether the outbox's packet ids go to the store before their PUBLISH is handed to
    /// the wire (MQTT 3.1.1, where the outbox chooses them, on a persistent session with
    /// a store): a restarted process then always knows the id the broker may hold.
    fn records_ids_first(&self) -> bool {
        self.has_store && !self.opts.connect.clean_session && self.outbox.chooses_ids()
    }

    /// Hands waiting publishes to the wire while connected and within the in-flight
    /// limit. When the ids are recorded first, the publishes handed now go to the wire
    /// once their ids are on disk (one store write, one flush when one of them is QoS 2),
    /// and nothing is handed after them until then, so the order holds.
    pub(super) fn pump(&mut self, wire: &mut dyn Wire) {
        if self.state != SessionState::Connected || !wire.attached() {
            return;
        }
        self.retry_releases(wire);
        if self.recording.is_some() {
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
                        let err = Error::PacketTooLarge {
                            session: self.name.to_string(),
                            size,
                            max: limit,
                        };
                        self.fail(e, err);
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
            let Some(p) = self.outbox.publish_of(id) else {
                return;
            };
            if wire.publish(p, pkid) {
                self.outbox.mark_handed(id);
            } else {
                // Channel full: the next processed request frees a slot and pumps again.
                break;
            }
        }
        if !batch.is_empty() {
            self.record_then_send(batch, wire);
        }
    }

    /// Records the packet ids of the handed entries `batch` (oldest first); they go to
    /// the wire once recorded ([`Then::IdsRecorded`]), or back to waiting.
    fn record_then_send(&mut self, batch: Vec<u64>, wire: &mut dyn Wire) {
        if !self.has_store {
            self.send_handed(&batch, wire);
            return;
        }
        let ids: Vec<StoredPacketId> = batch
            .iter()
            .filter_map(|id| self.outbox.stored_id(*id))
            .filter(|e| e.pkid != 0)
            .map(|e| StoredPacketId {
                seq: e.seq,
                pkid: e.pkid,
                released: false,
            })
            .collect();
        let flush = batch
            .iter()
            .filter_map(|id| self.outbox.stored_id(*id))
            .any(|e| e.exactly_once);
        self.recording = Some(batch);
        // One flush for the batch: the store worker commits a group's flushes once.
        self.store(
            StoreOp::SetPacketIds { ids, flush },
            Some(Then::IdsRecorded),
        );
    }

    /// Gives the handed entries `batch` (their ids recorded) to the wire, in order; what
    /// it has no room for waits again.
    fn send_handed(&mut self, batch: &[u64], wire: &mut dyn Wire) {
        for (i, &id) in batch.iter().enumerate() {
            if !self.outbox.is_handed(id) {
                continue;
            }
            let sent = match self.outbox.publish_of(id) {
                Some(p) if wire.attached() => {
                    let pkid = match p.qos {
                        QoS::AtMostOnce => 0,
                        _ => self.outbox.stored_id(id).map_or(0, |e| e.pkid),
                    };
                    wire.publish(p, pkid)
                }
                _ => false,
            };
            if !sent {
                self.outbox.return_handed(&batch[i..]);
                return;
            }
        }
    }

    /// The broker's PUBREC for `pkid` came and its PUBREL is held: the `released` flag
    /// goes to disk (flushed), then the PUBREL to the broker. Until then a restarted
    /// process re-sends the PUBLISH (DUP 1), which the broker still holds.
    pub(super) fn on_pubrec(&mut self, pkid: u16, wire: &mut dyn Wire) {
        match self.outbox.entry_id(pkid).filter(|_| self.has_store) {
            Some(id) => {
                let stored = StoredPacketId {
                    seq: id.seq,
                    pkid,
                    released: true,
                };
                self.store(
                    StoreOp::SetPacketIds {
                        ids: vec![stored],
                        flush: true,
                    },
                    Some(Then::Released(pkid)),
                );
            }
            None => {
                self.outbox.on_released(pkid);
                self.release(pkid, wire);
            }
        }
    }

    /// Sends the held PUBREL for `pkid` (or keeps it to retry).
    fn release(&mut self, pkid: u16, wire: &mut dyn Wire) {
        if wire.attached() && !wire.release(pkid) {
            self.releases.push(pkid);
        }
    }

    fn retry_releases(&mut self, wire: &mut dyn Wire) {
        if !wire.attached() {
            return;
        }
        while let Some(&pkid) = self.releases.first() {
            if !wire.release(pkid) {
                return;
            }
            self.releases.remove(0);
        }
    }

    /// Ends an entry with an error the broker (or its limits) gave: it is not retried, so
    /// it also leaves the store.
    pub(super) fn fail(&mut self, entry: Entry<R>, err: Error) {
        self.remove_stored(entry.seq);
        if let Some(r) = entry.responder {
            self.answer(r, Err(err));
        }
    }

    /// Ends an entry the broker acknowledged (or, QoS 0, the connection wrote).
    pub(super) fn complete(&mut self, entry: Entry<R>, now: Now) {
        self.remove_stored(entry.seq);
        let c = &self.counters;
        if entry.publish.qos != QoS::AtMostOnce {
            if let Some(written) = entry.written_at {
                c.ack_latency
                    .observe(now.mono.saturating_duration_since(written));
            }
        }
        c.messages_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.bytes_sent.fetch_add(
            entry.publish.payload.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(r) = entry.responder {
            self.answer(r, Ok(()));
        }
    }

    /// Takes a publish that was acknowledged (or refused for good) out of the store's
    /// outbox. Not flushed: losing this removal in a crash only means one duplicate
    /// later. The removals of one burst of acknowledgements go to the store as one job,
    /// after the shell handled the burst ([`Effect::FlushRemovalsSoon`]).
    fn remove_stored(&mut self, seq: Option<u64>) {
        let (true, Some(seq)) = (self.has_store, seq) else {
            return;
        };
        self.removals.push(seq);
        if self.removals.len() == 1 {
            self.out.push(Effect::FlushRemovalsSoon);
        }
    }

    /// A store write of this session, with `then` when the core waits for its result.
    /// The removals collected so far go first, so that the store sees every write of the
    /// session in the order it happened (a packet id freed by an acknowledgement is never
    /// on disk for two publishes). Every store write goes through here; nothing without
    /// a store.
    pub(super) fn store(&mut self, op: StoreOp, then: Option<Then>) {
        if !self.has_store {
            return;
        }
        self.flush_removals();
        if matches!(op, StoreOp::SetPacketIds { .. }) {
            self.ids_on_disk = true;
        }
        self.out.push(match then {
            Some(then) => Effect::StoreThen(op, then),
            None => Effect::Store(op),
        });
    }

    /// Hands the removals collected by [`remove_stored`](Self::remove_stored) to the
    /// store (also when the actor stops or restarts).
    pub(super) fn flush_removals(&mut self) {
        if self.removals.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.removals);
        let ids = self.ids_on_disk;
        self.out.push(Effect::Store(StoreOp::Remove { seqs, ids }));
    }

    /// Starts the one-second tick of a session with queued publishes (if it is not
    /// running). It stops once nothing is queued: an idle session costs its worker no
    /// wake-up.
    pub(super) fn tick_while_queued(&mut self) {
        if self.ticking || self.pending_total() == 0 {
            return;
        }
        self.ticking = true;
        self.out.push(Effect::StartTick);
    }

    /// The tick answers overdue publishes with `PublishTimeout` and retries a publish
    /// left waiting for room in the wire (acknowledgements, which are not reported to
    /// the core, may have filled it).
    pub(super) fn on_tick(&mut self, now: Now, wire: &mut dyn Wire) {
        let timeout = self.opts.performance.write_timeout;
        for r in self.outbox.take_overdue(now.mono, timeout) {
            let err = Error::PublishTimeout {
                session: self.name.to_string(),
                timeout,
            };
            self.answer(r, Err(err));
        }
        self.pump(wire);
        if self.ticking && self.pending_total() == 0 {
            self.ticking = false;
            self.out.push(Effect::StopTick);
        }
    }
}
