//! The message queues of a [`Store`]: the outbox and held messages.

use std::time::Duration;

use super::codec::{
    check_name, decode_entries, encode_batch, entry_count, key_seq, prefix, seq_key, Frame, BATCH,
    BATCH_MAX,
};
use super::{Result, Store, StoredMessage, StoredPublish};

/// Largest encoded QoS 1 publish that goes into an outbox batch (bigger ones get a key
/// of their own), and most bytes of one batch.
const BATCH_BYTES: usize = 16 * 1024;

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
    ///
    /// Runs of QoS 1 publishes are stored up to 64 under one key (a batch value, see
    /// `docs/ARCHITECTURE.md`, "Outbox batches"): one sled write and, once all of them are acknowledged, one
    /// removal, instead of one each. A crash before the last of a batch is acknowledged
    /// sends the others of it again after the restart (at least once). QoS 2 publishes
    /// keep a key each, so that none is ever sent again once completed.
    pub fn outbox_push_many(&self, session: &str, publishes: &[StoredPublish]) -> Result<Vec<u64>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut batch = sled::Batch::default();
        let mut seqs = Vec::with_capacity(publishes.len());
        let mut run = Run::default();
        let mut batches = Vec::new();
        for publish in publishes {
            let value = Frame::from(publish).encode()?;
            let seq = self.next_seq(OUTBOX_TAG, &self.inner.outbox, &prefix)?;
            seqs.push(seq);
            if publish.qos != 1 || value.len() > BATCH_BYTES {
                run.close(&prefix, &mut batch, &mut batches);
                batch.insert(seq_key(&prefix, seq), value);
                continue;
            }
            if !run.takes(seq, value.len()) {
                run.close(&prefix, &mut batch, &mut batches);
            }
            run.push(seq, value);
        }
        run.close(&prefix, &mut batch, &mut batches);
        self.inner
            .outbox
            .apply_batch(batch)
            .map_err(|e| self.sled(e))?;
        self.flush()?;
        if !batches.is_empty() {
            let mut tracked = self.batches();
            let of_session = tracked.entry(prefix).or_default();
            for (first, n) in batches {
                let _ = of_session.insert(first, (n, all_of(n)));
            }
        }
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

    /// Removes entry `seq`: its key, or its bit of a batch (the batch's key with the last
    /// one).
    fn remove_entry(&self, prefix: &[u8], seq: u64) -> Result<bool> {
        match self.unmark(prefix, seq) {
            Unmarked::Gone => return Ok(false),
            Unmarked::Last(first) => {
                let _ = self
                    .inner
                    .outbox
                    .remove(seq_key(prefix, first))
                    .map_err(|e| self.sled(e))?;
                return Ok(true);
            }
            Unmarked::Some => return Ok(true),
            Unmarked::NotInBatch => {}
        }
        let key = seq_key(prefix, seq);
        let outbox = &self.inner.outbox;
        match outbox.remove(&key).map_err(|e| self.sled(e))? {
            Some(v) if v.first() == Some(&BATCH) => {
                // A batch nobody loaded in this process: put it back and track it.
                outbox.insert(key, v.clone()).map_err(|e| self.sled(e))?;
                self.track(prefix, seq, &v)?;
                self.remove_entry(prefix, seq)
            }
            Some(_) => Ok(true),
            None => {
                // Inside a batch nobody loaded in this process?
                let range = outbox.range(seq_key(prefix, 0)..key).next_back();
                match range.transpose().map_err(|e| self.sled(e))? {
                    Some((k, v)) if v.first() == Some(&BATCH) => {
                        let first = key_seq(prefix, &k).map_err(|e| self.corrupt(e))?;
                        let n = entry_count(&v).map_err(|e| self.corrupt(e))?;
                        if seq >= first + n {
                            return Ok(false);
                        }
                        let _ = self.track(prefix, first, &v)?;
                        self.remove_entry(prefix, seq)
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    /// Clears entry `seq`'s bit of the tracked batch that holds it.
    fn unmark(&self, prefix: &[u8], seq: u64) -> Unmarked {
        let mut tracked = self.batches();
        let Some(of_session) = tracked.get_mut(prefix) else {
            return Unmarked::NotInBatch;
        };
        let Some((&first, &mut (n, ref mut mask))) = of_session.range_mut(..=seq).next_back()
        else {
            return Unmarked::NotInBatch;
        };
        let Some(bit) = seq.checked_sub(first).filter(|i| *i < n).map(|i| 1u64 << i) else {
            return Unmarked::NotInBatch;
        };
        if *mask & bit == 0 {
            return Unmarked::Gone;
        }
        *mask &= !bit;
        if *mask == 0 {
            let _ = of_session.remove(&first);
            Unmarked::Last(first)
        } else {
            Unmarked::Some
        }
    }

    /// Tracks the stored batch `value` at `first` (every entry present), unless tracked;
    /// returns the mask of its entries not yet removed.
    fn track(&self, prefix: &[u8], first: u64, value: &[u8]) -> Result<u64> {
        let n = entry_count(value).map_err(|e| self.corrupt(e))?;
        let mut tracked = self.batches();
        let (_, mask) = tracked
            .entry(prefix.to_vec())
            .or_default()
            .entry(first)
            .or_insert((n, all_of(n)));
        Ok(*mask)
    }

    /// The session's outbox, in sequence order (the entries of a batch one by one, but
    /// those removed since it was written, while this store is open).
    pub fn outbox_load(&self, session: &str) -> Result<Vec<(u64, StoredPublish)>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut out = Vec::new();
        for entry in self.inner.outbox.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let seq = key_seq(&prefix, &key).map_err(|e| self.corrupt(format!("outbox: {e}")))?;
            let frames = decode_entries(&raw)
                .map_err(|e| self.corrupt(format!("outbox {session:?} #{seq}: {e}")))?;
            if raw.first() != Some(&BATCH) {
                out.extend(frames.into_iter().map(|f| (seq, f.into())));
                continue;
            }
            let mask = self.track(&prefix, seq, &raw)?;
            for (i, f) in (0u64..).zip(frames) {
                if mask & (1 << i) != 0 {
                    out.push((seq + i, f.into()));
                }
            }
        }
        Ok(out)
    }

    /// How many publishes the session's outbox holds.
    pub fn outbox_len(&self, session: &str) -> Result<usize> {
        self.outbox_load(session).map(|o| o.len())
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

/// A mask of a batch's `n` entries, all present.
fn all_of(n: u64) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

/// What clearing an entry's bit of a tracked batch did.
enum Unmarked {
    /// The entry is not in a tracked batch.
    NotInBatch,
    /// It was removed already.
    Gone,
    /// Cleared; others of its batch remain.
    Some,
    /// Cleared the last one: the batch at this first sequence number is to be removed.
    Last(u64),
}

/// A run of consecutive QoS 1 publishes on its way into one batch.
#[derive(Default)]
struct Run {
    first: u64,
    values: Vec<Vec<u8>>,
    bytes: usize,
}

impl Run {
    /// Entry `seq` of `len` bytes can join the run.
    fn takes(&self, seq: u64, len: usize) -> bool {
        self.values.is_empty()
            || (seq == self.first + self.values.len() as u64
                && self.values.len() < BATCH_MAX
                && self.bytes + len <= BATCH_BYTES)
    }

    fn push(&mut self, seq: u64, value: Vec<u8>) {
        if self.values.is_empty() {
            self.first = seq;
        }
        self.bytes += value.len();
        self.values.push(value);
    }

    /// Puts the run in `batch` (one entry: as itself; more: as a batch, noted in
    /// `batches` with its size) and empties it.
    fn close(&mut self, prefix: &[u8], batch: &mut sled::Batch, batches: &mut Vec<(u64, u64)>) {
        match self.values.len() {
            0 => {}
            1 => batch.insert(seq_key(prefix, self.first), self.values.remove(0)),
            n => {
                batch.insert(seq_key(prefix, self.first), encode_batch(&self.values));
                batches.push((self.first, n as u64));
            }
        }
        self.values.clear();
        self.bytes = 0;
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
