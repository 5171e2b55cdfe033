//! The outbox: a session's publishes from `publish` until their completion (a plain type).
//!
//! An entry moves `waiting → handed` (given to rumqttc's request channel) `→ written`
//! (rumqttc reported its packet id) `→` done on PUBACK / PUBCOMP (QoS 0 is done when written).
//! When the connection is lost, every QoS >= 1 entry that rumqttc dropped goes back to
//! `waiting`; the entries still sitting unprocessed in rumqttc's channel stay `handed`
//! (rumqttc sends them first on the new connection). A written entry (it has a packet id)
//! depends on the session:
//! - clean session: back to `waiting`, in original order, sent again as a new publish
//!   (new packet id, DUP 0) after the next CONNACK;
//! - persistent session: `parked` with its packet id (and, for QoS 2, whether the
//!   broker's PUBREC came). At the next CONNACK, [`Outbox::on_connected`] either resumes
//!   it — the same packet id with DUP 1, or PUBREL once released [MQTT-4.4.0-1] — when the
//!   broker kept the session, or sends it again as new when it did not.
//!
//! On MQTT 3.1.1 the outbox chooses the packet ids itself ([`Outbox::choose_ids`]): an
//! entry gets a free id of `1 ..= window` when it is handed over ([`Outbox::assign_id`]),
//! keeps it while written and parked, and gives it back on completion or when it goes
//! back to waiting. So a persistent session with a store records the id before the
//! PUBLISH can be written. On MQTT 5 rumqttc numbers publishes and the entry learns its
//! id from `on_written`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::message::{Publish, QoS};

/// One publish and whoever waits for its completion.
#[derive(Debug)]
pub(crate) struct Entry<R> {
    /// The publish.
    pub publish: Publish,
    /// Completion handle (a oneshot sender in the actor).
    pub responder: Option<R>,
    /// When it was last written to a connection (for the acknowledgement timeout).
    pub written_at: Option<Instant>,
    /// Its key in the store's outbox, when the session has a store.
    pub seq: Option<u64>,
    /// The packet id it went out with (QoS >= 1, once written).
    pub pkid: Option<u16>,
    /// QoS 2: the broker's PUBREC came, PUBREL went (or is due).
    pub released: bool,
}

/// What to send again, first, on a connection that resumed the broker's session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resend {
    /// The PUBLISH, with its packet id and DUP set.
    Publish {
        /// The original packet id.
        pkid: u16,
        /// The publish.
        publish: Publish,
    },
    /// PUBREL for a QoS 2 publish the broker already acknowledged with PUBREC.
    PubRel(u16),
}

impl Resend {
    /// The packet id it goes out with.
    pub(crate) fn pkid(&self) -> u16 {
        match self {
            Resend::Publish { pkid, .. } | Resend::PubRel(pkid) => *pkid,
        }
    }
}

/// The packet id of one outbox entry, as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryId {
    /// The entry's key in the store's outbox.
    pub seq: u64,
    /// Its packet id.
    pub pkid: u16,
    /// PUBREC came.
    pub released: bool,
    /// A QoS 2 entry.
    pub exactly_once: bool,
}

/// The outbox; `R` is the completion handle type.
#[derive(Debug)]
pub(crate) struct Outbox<R> {
    limit: usize,
    next_id: u64,
    entries: BTreeMap<u64, Entry<R>>,
    waiting: VecDeque<u64>,
    handed: VecDeque<u64>,
    by_pkid: HashMap<u16, VecDeque<u64>>,
    collided: HashMap<u16, u64>,
    /// Written entries of a persistent session between a connection loss and the next
    /// CONNACK (oldest first): resumed or sent again as new then.
    parked: Vec<u64>,
    /// Packet ids of the PUBLISHes re-sent at the last CONNACK that rumqttc has not
    /// reported written yet. rumqttc reports a re-sent PUBLISH (`Outgoing::Publish(pkid)`)
    /// exactly like a new one; without this, `on_written` would take it for the oldest
    /// handed entry and give that entry the re-sent one's packet id (and the store would
    /// record it, so that a later restart re-sends the wrong message under that id).
    resending: Vec<u16>,
    qos1_outstanding: usize,
    /// The ids the outbox gives out (MQTT 3.1.1), or `None` when rumqttc numbers them.
    pool: Option<IdPool>,
}

/// Packet ids the outbox gives out itself (see the [module docs](self)).
#[derive(Debug)]
struct IdPool {
    /// Ids are `1 ..= window`.
    window: u16,
    /// Ids held by an entry.
    used: HashSet<u16>,
    /// Where the search for a free id starts (ids go round, so a just-freed id is not
    /// given again at once).
    next: u16,
}

impl IdPool {
    fn take(&mut self) -> Option<u16> {
        for _ in 0..self.window {
            let id = self.next;
            self.next = if id >= self.window { 1 } else { id + 1 };
            if self.used.insert(id) {
                return Some(id);
            }
        }
        None
    }
}

/// The outbox holds `limit` entries already.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl<R> Outbox<R> {
    /// An outbox for at most `limit` publishes.
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            limit,
            next_id: 0,
            entries: BTreeMap::new(),
            waiting: VecDeque::new(),
            handed: VecDeque::new(),
            by_pkid: HashMap::new(),
            collided: HashMap::new(),
            parked: Vec::new(),
            resending: Vec::new(),
            qos1_outstanding: 0,
            pool: None,
        }
    }

    /// From now on the outbox chooses packet ids, in `1 ..= window` (see the [module
    /// docs](self)); the ids entries hold already stay theirs.
    pub(crate) fn choose_ids(&mut self, window: u16) {
        let used = self.entries.values().filter_map(|e| e.pkid).collect();
        self.pool = Some(IdPool {
            window: window.max(1),
            used,
            next: 1,
        });
    }

    /// Whether the outbox chooses packet ids.
    pub(crate) fn chooses_ids(&self) -> bool {
        self.pool.is_some()
    }

    /// The packet id the waiting entry `id` (returned by `peek_sendable`) goes out with:
    /// 0 for QoS 0 or when rumqttc numbers publishes; else the id it holds, or a free one
    /// given to it now. `None` when no id is free (it waits).
    pub(crate) fn assign_id(&mut self, id: u64) -> Option<u16> {
        let Some(pool) = &mut self.pool else {
            return Some(0);
        };
        let e = self.entries.get_mut(&id)?;
        if e.publish.qos == QoS::AtMostOnce {
            return Some(0);
        }
        if let Some(pkid) = e.pkid {
            return Some(pkid);
        }
        let pkid = pool.take()?;
        e.pkid = Some(pkid);
        Some(pkid)
    }

    /// Gives an entry's chosen id back (it goes back to waiting without it, or is done).
    fn free_id(&mut self, pkid: Option<u16>) {
        if let (Some(pool), Some(pkid)) = (&mut self.pool, pkid) {
            pool.used.remove(&pkid);
        }
    }

    /// The store's view of the handed or written entry `id` (its packet id is recorded
    /// before it is written).
    pub(crate) fn stored_id(&self, id: u64) -> Option<EntryId> {
        let e = self.entries.get(&id)?;
        Some(EntryId {
            seq: e.seq?,
            pkid: e.pkid?,
            released: e.released,
            exactly_once: e.publish.qos == QoS::ExactlyOnce,
        })
    }

    /// The publish of entry `id`.
    pub(crate) fn publish_of(&self, id: u64) -> Option<&Publish> {
        self.entries.get(&id).map(|e| &e.publish)
    }

    /// Gives entry `id`, queued before it was in the store, its key there now that it is;
    /// false when the entry is gone (completed or failed meanwhile).
    pub(crate) fn set_seq(&mut self, id: u64, seq: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.seq = Some(seq);
                true
            }
            None => false,
        }
    }

    /// Whether `id` is still handed (not written, not back to waiting).
    pub(crate) fn is_handed(&self, id: u64) -> bool {
        self.handed.contains(&id)
    }

    /// The newest handed entries `ids` (oldest first) were not given to rumqttc after all
    /// (their packet ids could not be recorded, or its channel was full): they wait again,
    /// first, without their ids.
    pub(crate) fn return_handed(&mut self, ids: &[u64]) {
        for &id in ids.iter().rev() {
            let Some(pos) = self.handed.iter().rposition(|h| *h == id) else {
                continue;
            };
            self.handed.remove(pos);
            let mut pkid = None;
            if let Some(e) = self.entries.get_mut(&id) {
                if e.publish.qos != QoS::AtMostOnce {
                    self.qos1_outstanding = self.qos1_outstanding.saturating_sub(1);
                }
                pkid = e.pkid.take();
            }
            self.free_id(pkid);
            self.waiting.push_front(id);
        }
    }

    /// Entries not yet completed.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// QoS >= 1 entries handed to rumqttc and not yet acknowledged.
    pub(crate) fn inflight(&self) -> usize {
        self.qos1_outstanding
    }

    /// Queues a publish; refused when `limit` entries are pending.
    pub(crate) fn push(
        &mut self,
        publish: Publish,
        responder: Option<R>,
    ) -> Result<u64, (Full, Option<R>)> {
        if self.entries.len() >= self.limit {
            return Err((Full, responder));
        }
        Ok(self.insert(publish, responder, None))
    }

    /// Queues a publish that is already in the store (`seq`), even past the limit: it was
    /// accepted before, it must not be lost.
    pub(crate) fn push_stored(&mut self, publish: Publish, seq: u64, responder: Option<R>) -> u64 {
        self.insert(publish, responder, Some(seq))
    }

    /// Queues a stored publish that went out with packet id `pkid` before the process
    /// stopped (a persistent session): it waits, parked, for the first CONNACK.
    pub(crate) fn push_stored_with_id(
        &mut self,
        publish: Publish,
        seq: u64,
        pkid: u16,
        released: bool,
    ) -> u64 {
        let id = self.insert(publish, None, Some(seq));
        self.waiting.retain(|w| *w != id);
        if let Some(e) = self.entries.get_mut(&id) {
            e.pkid = Some(pkid);
            e.released = released;
        }
        if let Some(pool) = &mut self.pool {
            pool.used.insert(pkid);
        }
        self.parked.push(id);
        id
    }

    fn insert(&mut self, publish: Publish, responder: Option<R>, seq: Option<u64>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            id,
            Entry {
                publish,
                responder,
                written_at: None,
                seq,
                pkid: None,
                released: false,
            },
        );
        self.waiting.push_back(id);
        id
    }

    /// The stored entry that holds `pkid` now (to record its packet id in the store).
    pub(crate) fn entry_id(&self, pkid: u16) -> Option<EntryId> {
        let id = *self.by_pkid.get(&pkid)?.front()?;
        let e = self.entries.get(&id)?;
        Some(EntryId {
            seq: e.seq?,
            pkid,
            released: e.released,
            exactly_once: e.publish.qos == QoS::ExactlyOnce,
        })
    }

    /// rumqttc sent PUBREL for `pkid` (the broker's PUBREC came): the QoS 2 entry now
    /// waits for PUBCOMP. Returns true when an entry changed.
    pub(crate) fn on_released(&mut self, pkid: u16) -> bool {
        let Some(&id) = self.by_pkid.get(&pkid).and_then(VecDeque::front) else {
            return false;
        };
        match self.entries.get_mut(&id) {
            Some(e) if e.publish.qos == QoS::ExactlyOnce && !e.released => {
                e.released = true;
                true
            }
            _ => false,
        }
    }

    /// The next waiting publish that may be handed to rumqttc now, given at most
    /// `max_inflight` QoS >= 1 publishes outstanding.
    pub(crate) fn peek_sendable(&self, max_inflight: usize) -> Option<(u64, &Publish)> {
        let id = *self.waiting.front()?;
        let e = self.entries.get(&id)?;
        if e.publish.qos != QoS::AtMostOnce && self.qos1_outstanding >= max_inflight {
            return None;
        }
        Some((id, &e.publish))
    }

    /// Marks the front waiting entry (returned by `peek_sendable`) as handed to rumqttc.
    pub(crate) fn mark_handed(&mut self, id: u64) {
        if self.waiting.front() == Some(&id) {
            self.waiting.pop_front();
            if let Some(e) = self.entries.get(&id) {
                if e.publish.qos != QoS::AtMostOnce {
                    self.qos1_outstanding += 1;
                }
            }
            self.handed.push_back(id);
        }
    }

    /// Takes the front waiting entry (returned by `peek_sendable`) out without sending it
    /// (the broker's limits refuse it).
    pub(crate) fn remove_waiting(&mut self, id: u64) -> Option<Entry<R>> {
        if self.waiting.front() != Some(&id) {
            return None;
        }
        self.waiting.pop_front();
        self.entries.remove(&id)
    }

    /// rumqttc wrote a publish (`Outgoing::Publish(pkid)`). A QoS 0 entry completes here
    /// and is returned.
    pub(crate) fn on_written(&mut self, pkid: u16, now: Instant) -> Option<Entry<R>> {
        if let Some(i) = self.resending.iter().position(|p| *p == pkid && pkid != 0) {
            // A resumed entry went out again: it already has its slot in by_pkid.
            self.resending.swap_remove(i);
            return None;
        }
        if pkid != 0 {
            if let Some(id) = self.collided.remove(&pkid) {
                // A collided publish finally went out: it already has its slot in by_pkid.
                if let Some(e) = self.entries.get_mut(&id) {
                    e.written_at = Some(now);
                }
                return None;
            }
        }
        let id = self.handed.pop_front()?;
        if pkid == 0 {
            return self.entries.remove(&id);
        }
        if let Some(e) = self.entries.get_mut(&id) {
            e.written_at = Some(now);
            e.pkid = Some(pkid);
        }
        self.by_pkid.entry(pkid).or_default().push_back(id);
        None
    }

    /// rumqttc held a publish back because `pkid` is still in use (`Outgoing::AwaitAck`).
    pub(crate) fn on_collision(&mut self, pkid: u16) {
        if let Some(id) = self.handed.pop_front() {
            self.by_pkid.entry(pkid).or_default().push_back(id);
            self.collided.insert(pkid, id);
            if let Some(e) = self.entries.get_mut(&id) {
                e.pkid = Some(pkid);
            }
        }
    }

    /// PUBACK or PUBCOMP for `pkid`: returns the completed entry.
    pub(crate) fn on_acked(&mut self, pkid: u16) -> Option<Entry<R>> {
        let q = self.by_pkid.get_mut(&pkid)?;
        let id = q.pop_front()?;
        if q.is_empty() {
            self.by_pkid.remove(&pkid);
        }
        self.qos1_outstanding = self.qos1_outstanding.saturating_sub(1);
        let e = self.entries.remove(&id)?;
        self.free_id(e.pkid);
        Some(e)
    }

    /// The connection ended. `drained_qos1` / `drained_qos0` are the unprocessed publish
    /// requests rumqttc dropped from its channel (the oldest handed entries). Dropped
    /// QoS >= 1 entries go back to waiting; written ones too, unless `keep_ids` (a persistent
    /// session), which parks them with their packet ids until the next CONNACK; dropped
    /// QoS 0 entries are returned (they are lost: QoS 0 is never resent).
    pub(crate) fn on_connection_lost(
        &mut self,
        drained_qos1: usize,
        drained_qos0: usize,
        keep_ids: bool,
    ) -> Vec<Entry<R>> {
        let collided: Vec<u64> = self.collided.drain().map(|(_, id)| id).collect();
        self.resending.clear();
        let mut back = Vec::new();
        let mut newly_parked = 0;
        for (_, q) in self.by_pkid.drain() {
            for id in q {
                // A collided entry never went out: rumqttc held it back.
                if keep_ids && !collided.contains(&id) {
                    self.parked.push(id);
                    newly_parked += 1;
                } else {
                    back.push(id);
                }
            }
        }
        self.parked.sort_unstable();
        self.qos1_outstanding = self.qos1_outstanding.saturating_sub(newly_parked);
        let mut lost = Vec::new();
        let (mut q1, mut q0) = (drained_qos1, drained_qos0);
        while q1 + q0 > 0 {
            let Some(&id) = self.handed.front() else {
                break;
            };
            let is_q0 = self
                .entries
                .get(&id)
                .is_some_and(|e| e.publish.qos == QoS::AtMostOnce);
            if is_q0 && q0 > 0 {
                q0 -= 1;
                self.handed.pop_front();
                if let Some(e) = self.entries.remove(&id) {
                    lost.push(e);
                }
            } else if !is_q0 && q1 > 0 {
                q1 -= 1;
                self.handed.pop_front();
                back.push(id);
            } else {
                break;
            }
        }
        self.qos1_outstanding = self.qos1_outstanding.saturating_sub(back.len());
        back.extend(self.waiting.drain(..));
        back.sort_unstable();
        back.dedup();
        for id in back.iter().chain(&self.parked) {
            if let Some(e) = self.entries.get_mut(id) {
                e.written_at = None;
            }
        }
        for id in &back {
            let pkid = self.entries.get_mut(id).and_then(|e| {
                e.released = false;
                e.pkid.take()
            });
            self.free_id(pkid);
        }
        self.waiting = back.into();
        lost
    }

    /// A CONNACK: with `session_present`, the parked entries are in flight again and
    /// returned, oldest first, to be sent before anything else (PUBLISH with the same
    /// packet id and DUP, or PUBREL); without, they go back to waiting and are sent again
    /// as new publishes (their packet ids are forgotten, returned nothing).
    pub(crate) fn on_connected(&mut self, session_present: bool, now: Instant) -> Vec<Resend> {
        let parked = std::mem::take(&mut self.parked);
        self.resending.clear();
        if !session_present {
            let mut back: Vec<u64> = self.waiting.drain(..).collect();
            for id in &parked {
                let pkid = self.entries.get_mut(id).and_then(|e| {
                    e.released = false;
                    e.pkid.take()
                });
                self.free_id(pkid);
            }
            back.extend(parked);
            back.sort_unstable();
            self.waiting = back.into();
            return Vec::new();
        }
        let mut out = Vec::with_capacity(parked.len());
        for id in parked {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some(pkid) = e.pkid else { continue };
            e.written_at = Some(now);
            out.push(if e.released {
                Resend::PubRel(pkid)
            } else {
                self.resending.push(pkid);
                Resend::Publish {
                    pkid,
                    publish: e.publish.clone(),
                }
            });
            self.by_pkid.entry(pkid).or_default().push_back(id);
            self.qos1_outstanding += 1;
        }
        out
    }

    /// Parked entries (a persistent session between a connection loss and its CONNACK).
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Responders of written QoS >= 1 entries whose acknowledgement is overdue; each is
    /// returned once (the entry itself stays and is still delivered).
    pub(crate) fn take_overdue(&mut self, now: Instant, timeout: std::time::Duration) -> Vec<R> {
        self.entries
            .values_mut()
            .filter(|e| {
                e.written_at
                    .is_some_and(|w| now.duration_since(w) >= timeout)
            })
            .filter_map(|e| e.responder.take())
            .collect()
    }

    /// Removes everything (the session closes); returns the entries.
    pub(crate) fn drain(&mut self) -> Vec<Entry<R>> {
        self.waiting.clear();
        self.handed.clear();
        self.by_pkid.clear();
        self.collided.clear();
        self.parked.clear();
        self.resending.clear();
        self.qos1_outstanding = 0;
        if let Some(pool) = &mut self.pool {
            pool.used.clear();
        }
        std::mem::take(&mut self.entries).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, qos: QoS) -> Publish {
        Publish::new(topic, "x").qos(qos)
    }

    fn send_all(o: &mut Outbox<u32>, max: usize) -> Vec<u64> {
        let mut ids = vec![];
        while let Some((id, _)) = o.peek_sendable(max) {
            o.mark_handed(id);
            ids.push(id);
        }
        ids
    }

    #[test]
    fn bound_is_enforced_and_responder_returned() {
        let mut o = Outbox::new(2);
        o.push(p("a", QoS::AtLeastOnce), Some(1)).unwrap();
        o.push(p("b", QoS::AtLeastOnce), Some(2)).unwrap();
        assert_eq!(
            o.push(p("c", QoS::AtLeastOnce), Some(3)).unwrap_err(),
            (Full, Some(3))
        );
    }

    #[test]
    fn qos1_completes_on_ack_and_qos0_on_write() {
        let mut o = Outbox::new(10);
        o.push(p("a", QoS::AtLeastOnce), Some(1)).unwrap();
        o.push(p("b", QoS::AtMostOnce), Some(2)).unwrap();
        assert_eq!(send_all(&mut o, 10).len(), 2);
        let now = Instant::now();
        assert!(o.on_written(7, now).is_none());
        assert_eq!(o.on_written(0, now).and_then(|e| e.responder), Some(2));
        assert_eq!(o.inflight(), 1);
        assert_eq!(o.on_acked(7).and_then(|e| e.responder), Some(1));
        assert!(o.is_empty());
        assert_eq!(o.inflight(), 0);
    }

    #[test]
    fn a_refused_waiting_entry_leaves_without_being_sent() {
        let mut o = Outbox::new(10);
        o.push(p("big", QoS::AtLeastOnce), Some(1)).unwrap();
        o.push(p("small", QoS::AtLeastOnce), Some(2)).unwrap();
        let (id, _) = o.peek_sendable(10).unwrap();
        assert_eq!(o.remove_waiting(id).and_then(|e| e.responder), Some(1));
        assert_eq!(o.inflight(), 0);
        assert_eq!(send_all(&mut o, 10).len(), 1);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn inflight_limit_holds_back_qos1_only() {
        let mut o: Outbox<u32> = Outbox::new(10);
        for t in ["a", "b"] {
            o.push(p(t, QoS::AtLeastOnce), None).unwrap();
        }
        assert_eq!(send_all(&mut o, 1).len(), 1);
        assert!(o.peek_sendable(1).is_none());
    }

    #[test]
    fn connection_loss_requeues_written_and_drained_in_order_and_keeps_stray() {
        let mut o = Outbox::new(10);
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            o.push(p(t, QoS::AtLeastOnce), Some(i as u32)).unwrap();
        }
        o.push(p("q0", QoS::AtMostOnce), Some(9)).unwrap();
        let ids = send_all(&mut o, 10);
        assert_eq!(ids.len(), 5);
        o.on_written(1, Instant::now()); // a written
                                         // b was drained by rumqttc, c and d and q0 remain in its channel (stray)
        let lost = o.on_connection_lost(1, 0, false);
        assert!(lost.is_empty());
        let order: Vec<&str> = o
            .waiting
            .iter()
            .map(|id| o.entries[id].publish.topic.as_str())
            .collect();
        assert_eq!(order, vec!["a", "b"]);
        assert_eq!(o.handed.len(), 3);
        assert_eq!(o.inflight(), 2);
    }

    #[test]
    fn drained_qos0_is_reported_lost() {
        let mut o = Outbox::new(10);
        o.push(p("q0", QoS::AtMostOnce), Some(5)).unwrap();
        send_all(&mut o, 10);
        let lost = o.on_connection_lost(0, 1, false);
        assert_eq!(
            lost.into_iter()
                .filter_map(|e| e.responder)
                .collect::<Vec<_>>(),
            vec![5]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn collision_completes_both_in_order() {
        let mut o = Outbox::new(10);
        o.push(p("a", QoS::AtLeastOnce), Some(1)).unwrap();
        o.push(p("b", QoS::AtLeastOnce), Some(2)).unwrap();
        send_all(&mut o, 10);
        let now = Instant::now();
        o.on_written(3, now);
        o.on_collision(3);
        assert_eq!(o.on_acked(3).and_then(|e| e.responder), Some(1));
        assert!(o.on_written(3, now).is_none());
        assert_eq!(o.on_acked(3).and_then(|e| e.responder), Some(2));
    }

    #[test]
    fn overdue_responders_are_taken_once_and_entries_stay() {
        let mut o = Outbox::new(10);
        o.push(p("a", QoS::AtLeastOnce), Some(1)).unwrap();
        send_all(&mut o, 10);
        let t0 = Instant::now();
        o.on_written(1, t0);
        let later = t0 + std::time::Duration::from_secs(31);
        assert_eq!(
            o.take_overdue(later, std::time::Duration::from_secs(30)),
            vec![1]
        );
        assert!(o
            .take_overdue(later, std::time::Duration::from_secs(30))
            .is_empty());
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn persistent_session_parks_written_entries_and_resumes_them_with_their_ids() {
        let mut o = Outbox::new(10);
        o.push(p("a", QoS::AtLeastOnce), Some(1)).unwrap();
        o.push(p("b", QoS::ExactlyOnce), Some(2)).unwrap();
        o.push(p("c", QoS::ExactlyOnce), Some(3)).unwrap();
        send_all(&mut o, 10);
        let now = Instant::now();
        for pkid in [4, 5, 6] {
            o.on_written(pkid, now);
        }
        assert!(o.on_released(6));
        assert!(!o.on_released(4), "QoS 1 is never released");
        o.on_connection_lost(0, 0, true);
        assert_eq!(o.parked(), 3);
        assert_eq!(o.inflight(), 0);
        assert!(
            o.peek_sendable(10).is_none(),
            "parked entries are not sent as new"
        );
        let resent = o.on_connected(true, now);
        assert_eq!(
            resent,
            vec![
                Resend::Publish {
                    pkid: 4,
                    publish: p("a", QoS::AtLeastOnce)
                },
                Resend::Publish {
                    pkid: 5,
                    publish: p("b", QoS::ExactlyOnce)
                },
                Resend::PubRel(6),
            ]
        );
        assert_eq!(o.inflight(), 3);
        assert_eq!(o.on_acked(6).and_then(|e| e.responder), Some(3));
    }

    #[test]
    fn a_resent_publish_written_again_does_not_take_the_id_of_a_new_one() {
        let mut o = Outbox::new(10);
        o.push_stored_with_id(p("old", QoS::ExactlyOnce), 1, 3, false);
        let resent = o.on_connected(true, Instant::now());
        assert_eq!(resent.len(), 1);
        o.push(p("new", QoS::ExactlyOnce), Some(2)).unwrap();
        send_all(&mut o, 10);
        // rumqttc writes the re-sent PUBLISH first, then the new one (id 1).
        let now = Instant::now();
        assert!(o.on_written(3, now).is_none());
        assert!(o.on_written(1, now).is_none());
        assert_eq!(o.entry_id(3).map(|e| e.seq), Some(1));
        assert_eq!(o.on_acked(1).and_then(|e| e.responder), Some(2));
        assert_eq!(o.on_acked(3).map(|e| e.seq), Some(Some(1)));
        assert!(o.is_empty());
    }

    #[test]
    fn without_a_session_on_the_broker_parked_entries_are_sent_as_new() {
        let mut o = Outbox::new(10);
        o.push(p("a", QoS::ExactlyOnce), Some(1)).unwrap();
        send_all(&mut o, 10);
        o.on_written(9, Instant::now());
        o.on_connection_lost(0, 0, true);
        assert!(o.on_connected(false, Instant::now()).is_empty());
        let (id, _) = o.peek_sendable(10).unwrap();
        assert_eq!(o.entries[&id].pkid, None);
    }

    #[test]
    fn a_restored_entry_with_an_id_waits_parked_for_the_first_connack() {
        let mut o: Outbox<u32> = Outbox::new(10);
        o.push_stored_with_id(p("a", QoS::ExactlyOnce), 7, 3, true);
        o.push_stored(p("b", QoS::AtLeastOnce), 8, None);
        assert_eq!(o.parked(), 1);
        assert_eq!(
            o.on_connected(true, Instant::now()),
            vec![Resend::PubRel(3)]
        );
        assert_eq!(
            o.entry_id(3),
            Some(EntryId {
                seq: 7,
                pkid: 3,
                released: true,
                exactly_once: true
            })
        );
        assert_eq!(send_all(&mut o, 10).len(), 1);
    }

    /// Hands the front waiting entry over with the id the outbox chooses.
    fn hand(o: &mut Outbox<u32>) -> Option<u16> {
        let (id, _) = o.peek_sendable(100)?;
        let pkid = o.assign_id(id)?;
        o.mark_handed(id);
        Some(pkid)
    }

    #[test]
    fn chosen_ids_are_unique_go_round_and_are_freed_on_completion() {
        let mut o: Outbox<u32> = Outbox::new(10);
        o.choose_ids(3);
        for t in ["a", "b", "c", "d"] {
            o.push(p(t, QoS::ExactlyOnce), None).unwrap();
        }
        o.push(p("q0", QoS::AtMostOnce), None).unwrap();
        assert_eq!(
            [hand(&mut o), hand(&mut o), hand(&mut o)],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(hand(&mut o), None, "no id free: the entry waits");
        let now = Instant::now();
        for pkid in [1, 2, 3] {
            assert!(o.on_written(pkid, now).is_none());
        }
        assert!(o.on_acked(2).is_some());
        assert_eq!(hand(&mut o), Some(2));
        assert_eq!(hand(&mut o), Some(0), "QoS 0 has no packet id");
    }

    #[test]
    fn ids_held_by_restored_entries_are_not_given_again() {
        let mut o: Outbox<u32> = Outbox::new(10);
        o.push_stored_with_id(p("old", QoS::ExactlyOnce), 1, 1, false);
        o.choose_ids(3);
        o.push(p("new", QoS::ExactlyOnce), None).unwrap();
        assert_eq!(o.on_connected(true, Instant::now()).len(), 1);
        assert_eq!(hand(&mut o), Some(2));
    }

    #[test]
    fn returned_entries_wait_first_without_their_ids() {
        let mut o: Outbox<u32> = Outbox::new(10);
        o.choose_ids(5);
        for t in ["a", "b", "c"] {
            o.push(p(t, QoS::ExactlyOnce), None).unwrap();
        }
        let mut ids = vec![];
        for _ in 0..3 {
            let (id, _) = o.peek_sendable(10).unwrap();
            o.assign_id(id).unwrap();
            o.mark_handed(id);
            ids.push(id);
        }
        assert_eq!(o.stored_id(ids[1]), None, "not stored: no seq");
        o.return_handed(&ids[1..]);
        assert_eq!(o.inflight(), 1);
        assert!(o.is_handed(ids[0]) && !o.is_handed(ids[1]));
        let (front, _) = o.peek_sendable(10).unwrap();
        assert_eq!(front, ids[1]);
        // Their ids (2 and 3) are free again; the cursor goes on from 4.
        assert_eq!(hand(&mut o), Some(4));
        assert_eq!(hand(&mut o), Some(5));
    }

    #[test]
    fn a_connection_loss_keeps_the_ids_of_parked_and_stray_entries_only() {
        let mut o: Outbox<u32> = Outbox::new(10);
        o.choose_ids(10);
        for t in ["written", "drained", "stray"] {
            o.push(p(t, QoS::ExactlyOnce), None).unwrap();
        }
        for _ in 0..3 {
            hand(&mut o).unwrap();
        }
        assert!(o.on_written(1, Instant::now()).is_none());
        // "drained" (id 2) was dropped from the channel; "stray" (id 3) is still in it.
        o.on_connection_lost(1, 0, true);
        assert_eq!(o.parked(), 1);
        o.push(p("next", QoS::ExactlyOnce), None).unwrap();
        // Ids 1 (parked) and 3 (stray) stay taken; 2 is free, but the cursor is at 4.
        assert_eq!(hand(&mut o), Some(4));
        // Without a session on the broker the parked entry's id is freed too.
        assert!(o.on_connected(false, Instant::now()).is_empty());
        assert_eq!(hand(&mut o), Some(5));
    }
}
