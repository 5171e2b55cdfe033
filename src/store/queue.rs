//! The message queues of a [`Store`]: the outbox and held messages.

use std::time::Duration;

use super::codec::{check_name, key_seq, prefix, seq_key, Frame};
use super::{Result, Store, StoredMessage, StoredPublish};

/// Tags of the sequence counters (one per tree).
const OUTBOX_TAG: u8 = b'o';
const HELD_TAG: u8 = b'h';

/// Bounds of the messages held for one route that is not registered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLimit {
    /// At most this many messages per (session, route).
    pub max_per_route: usize,
    /// Messages older than this are dropped (when room is needed, and on take).
    pub max_age: Duration,
}

/// What [`Store::held_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum HeldPush {
    /// Stored under this sequence number (and flushed).
    Stored(u64),
    /// Not stored: the route already holds `max_per_route` unexpired messages.
    Full,
}

/// What [`Store::held_take`] returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldTaken {
    /// The unexpired messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// How many expired messages were deleted without being returned.
    pub expired: usize,
}

/// What [`Store::held_load`] returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldLoaded {
    /// The unexpired messages with their sequence numbers, oldest first.
    pub messages: Vec<(u64, StoredMessage)>,
    /// How many expired messages were deleted without being returned.
    pub expired: usize,
}

fn is_expired(msg_ms: u64, now_ms: u64, max_age: Duration) -> bool {
    u128::from(now_ms.saturating_sub(msg_ms)) > max_age.as_millis()
}

impl Store {
    /// Appends a publish to the session's outbox and flushes before returning, so it
    /// survives a crash. Returns its sequence number (greater than every stored one).
    pub fn outbox_push(&self, session: &str, publish: &StoredPublish) -> Result<u64> {
        let seqs = self.outbox_push_many(session, std::slice::from_ref(publish))?;
        Ok(seqs.first().copied().unwrap_or_default())
    }

    /// Appends several publishes in one atomic batch with one flush (group commit);
    /// returns their sequence numbers in order.
    pub fn outbox_push_many(&self, session: &str, publishes: &[StoredPublish]) -> Result<Vec<u64>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut batch = sled::Batch::default();
        let mut seqs = Vec::with_capacity(publishes.len());
        for publish in publishes {
            let value = Frame::from(publish).encode()?;
            let seq = self.next_seq(OUTBOX_TAG, &self.inner.outbox, &prefix)?;
            batch.insert(seq_key(&prefix, seq), value);
            seqs.push(seq);
        }
        self.inner
            .outbox
            .apply_batch(batch)
            .map_err(|e| self.sled(e))?;
        self.flush()?;
        Ok(seqs)
    }

    /// Removes an acknowledged publish; `false` if it was not there.
    ///
    /// Not flushed: a removal lost to a crash replays the publish once more after the
    /// restart, which QoS >= 1 (at least once) allows.
    pub fn outbox_remove(&self, session: &str, seq: u64) -> Result<bool> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        self.outbox_id_remove(&prefix, seq)?;
        self.remove_entry(&prefix, seq)
    }

    /// Removes an acknowledged publish that never had a packet id recorded
    /// ([`Store::outbox_set_packet_id`]): [`Store::outbox_remove`] without the look-up of
    /// its id. Not flushed.
    pub(crate) fn outbox_remove_entry(&self, session: &str, seq: u64) -> Result<bool> {
        check_name("session", session)?;
        self.remove_entry(&prefix(&[session]), seq)
    }

    fn remove_entry(&self, prefix: &[u8], seq: u64) -> Result<bool> {
        Ok(self
            .inner
            .outbox
            .remove(seq_key(prefix, seq))
            .map_err(|e| self.sled(e))?
            .is_some())
    }

    /// The session's outbox, in sequence order.
    pub fn outbox_load(&self, session: &str) -> Result<Vec<(u64, StoredPublish)>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut out = Vec::new();
        for entry in self.inner.outbox.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let seq = key_seq(&prefix, &key).map_err(|e| self.corrupt(format!("outbox: {e}")))?;
            let frame = Frame::decode(&raw)
                .map_err(|e| self.corrupt(format!("outbox {session:?} #{seq}: {e}")))?;
            out.push((seq, frame.into()));
        }
        Ok(out)
    }

    /// How many publishes the session's outbox holds.
    pub fn outbox_len(&self, session: &str) -> Result<usize> {
        check_name("session", session)?;
        count(self, &self.inner.outbox, &prefix(&[session]))
    }

    /// Holds a message for a durable `route` of `session` that is not registered yet,
    /// and flushes. When the route is full, expired messages are dropped first; if it is
    /// still full the message is not stored ([`HeldPush::Full`]).
    pub fn held_push(
        &self,
        session: &str,
        route: &str,
        msg: &StoredMessage,
        limit: HeldLimit,
        now_ms: u64,
    ) -> Result<HeldPush> {
        check_name("session", session)?;
        check_name("route", route)?;
        let prefix = prefix(&[session, route]);
        let value = Frame::from(msg).encode()?;
        let mut held = self.held_counted(&prefix)?;
        if held >= limit.max_per_route {
            let mut batch = sled::Batch::default();
            for entry in self.inner.held.scan_prefix(&prefix) {
                let (key, raw) = entry.map_err(|e| self.sled(e))?;
                let frame = Frame::decode(&raw)
                    .map_err(|e| self.corrupt(format!("held {session:?} {route:?}: {e}")))?;
                if is_expired(frame.received_at_ms, now_ms, limit.max_age) {
                    batch.remove(key);
                    held -= 1;
                }
            }
            self.inner
                .held
                .apply_batch(batch)
                .map_err(|e| self.sled(e))?;
            self.held_recount(&prefix, Some(held));
            if held >= limit.max_per_route {
                return Ok(HeldPush::Full);
            }
        }
        let seq = self.next_seq(HELD_TAG, &self.inner.held, &prefix)?;
        let _ = self
            .inner
            .held
            .insert(seq_key(&prefix, seq), value)
            .map_err(|e| self.sled(e))?;
        self.held_recount(&prefix, Some(held + 1));
        self.flush()?;
        Ok(HeldPush::Stored(seq))
    }

    /// Takes every message held for `route` of `session`: deletes them all (one batch,
    /// flushed) and returns those not older than `max_age`, oldest first.
    pub fn held_take(
        &self,
        session: &str,
        route: &str,
        now_ms: u64,
        max_age: Duration,
    ) -> Result<HeldTaken> {
        check_name("session", session)?;
        check_name("route", route)?;
        let prefix = prefix(&[session, route]);
        let mut taken = HeldTaken::default();
        let mut batch = sled::Batch::default();
        for entry in self.inner.held.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let frame = Frame::decode(&raw)
                .map_err(|e| self.corrupt(format!("held {session:?} {route:?}: {e}")))?;
            batch.remove(key);
            if is_expired(frame.received_at_ms, now_ms, max_age) {
                taken.expired += 1;
            } else {
                taken.messages.push(frame.into());
            }
        }
        self.inner
            .held
            .apply_batch(batch)
            .map_err(|e| self.sled(e))?;
        self.held_recount(&prefix, None);
        self.flush()?;
        Ok(taken)
    }

    /// Reads every message held for `route` of `session`, oldest first, with its sequence
    /// number, and deletes (one batch, flushed) those older than `max_age`. The others
    /// stay until [`held_remove`](Self::held_remove): a message is deleted only once the
    /// route has handled it, so a crash in between delivers it again.
    pub fn held_load(
        &self,
        session: &str,
        route: &str,
        now_ms: u64,
        max_age: Duration,
    ) -> Result<HeldLoaded> {
        check_name("session", session)?;
        check_name("route", route)?;
        let prefix = prefix(&[session, route]);
        let mut loaded = HeldLoaded::default();
        let mut batch = sled::Batch::default();
        for entry in self.inner.held.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let frame = Frame::decode(&raw)
                .map_err(|e| self.corrupt(format!("held {session:?} {route:?}: {e}")))?;
            if is_expired(frame.received_at_ms, now_ms, max_age) {
                batch.remove(key);
                loaded.expired += 1;
            } else {
                let seq = key_seq(&prefix, &key)
                    .map_err(|e| self.corrupt(format!("held {session:?} {route:?}: {e}")))?;
                loaded.messages.push((seq, frame.into()));
            }
        }
        self.held_recount(&prefix, None);
        if loaded.expired > 0 {
            self.inner
                .held
                .apply_batch(batch)
                .map_err(|e| self.sled(e))?;
            self.flush()?;
        }
        Ok(loaded)
    }

    /// Deletes one held message once its route has handled it. Not flushed (sled writes
    /// it within 500 ms, or the next flushing call): a removal lost in a crash delivers
    /// the message once more, which QoS >= 1 allows.
    pub fn held_remove(&self, session: &str, route: &str, seq: u64) -> Result<bool> {
        check_name("session", session)?;
        check_name("route", route)?;
        let prefix = prefix(&[session, route]);
        let key = seq_key(&prefix, seq);
        let old = self.inner.held.remove(key).map_err(|e| self.sled(e))?;
        if old.is_some() {
            let mut counts = self.held_counts();
            if let Some(n) = counts.get_mut(&prefix) {
                *n = n.saturating_sub(1);
            }
        }
        Ok(old.is_some())
    }

    /// The kept counts of held messages, by `session \0 route` prefix.
    pub(super) fn held_counts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Vec<u8>, usize>> {
        self.inner
            .held_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Messages held under `prefix`: counted from the tree the first time, then kept.
    fn held_counted(&self, prefix: &[u8]) -> Result<usize> {
        if let Some(n) = self.held_counts().get(prefix) {
            return Ok(*n);
        }
        let n = count(self, &self.inner.held, prefix)?;
        self.held_recount(prefix, Some(n));
        Ok(n)
    }

    /// Sets the kept count of `prefix` (`None`: forget it, count again next time).
    pub(super) fn held_recount(&self, prefix: &[u8], n: Option<usize>) {
        let mut counts = self.held_counts();
        match n {
            Some(n) => counts.insert(prefix.to_vec(), n),
            None => counts.remove(prefix),
        };
    }

    /// How many messages are held for all routes of `session`.
    pub fn held_count(&self, session: &str) -> Result<usize> {
        check_name("session", session)?;
        count(self, &self.inner.held, &prefix(&[session]))
    }
}

fn count(store: &Store, tree: &sled::Tree, prefix: &[u8]) -> Result<usize> {
    let mut n = 0;
    for key in tree.scan_prefix(prefix).keys() {
        let _ = key.map_err(|e| store.sled(e))?;
        n += 1;
    }
    Ok(n)
}

/// Milliseconds since the Unix epoch (0 before it), for `received_at_ms` and `now_ms`.
pub fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
