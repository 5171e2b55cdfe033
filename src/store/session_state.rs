//! The MQTT session state of persistent sessions: the packet ids of outbox entries and
//! the handled incoming QoS 2 packet ids (trees `outbox_ids` and `inbound`, migration 3).
//!
//! Kept apart from the outbox values so that recording a packet id rewrites a few bytes,
//! not the message.

use super::codec::{check_name, key_seq, prefix, seq_key};
use super::{Result, Store};

/// Bit 0 of an `outbox_ids` value's flags: the broker's PUBREC came (PUBREL is due).
const RELEASED: u8 = 1;

/// The packet id an outbox entry went out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPacketId {
    /// The outbox entry's sequence number.
    pub seq: u64,
    /// Its packet id (never 0).
    pub pkid: u16,
    /// The broker answered PUBREC: PUBREL is due, not the PUBLISH (QoS 2).
    pub released: bool,
}

impl Store {
    /// Records the packet id of outbox entry `seq` (and whether it was released), and
    /// flushes when `flush` (a QoS 2 entry: a restarted process must resume it under its
    /// id, or the broker could see it twice; a QoS 1 entry re-sent as new is only the
    /// duplicate QoS 1 allows, so its id is left to sled's background flush, and a busy
    /// persistent session does not pay one fsync per publish).
    pub fn outbox_set_packet_id(
        &self,
        session: &str,
        id: StoredPacketId,
        flush: bool,
    ) -> Result<()> {
        check_name("session", session)?;
        let key = seq_key(&prefix(&[session]), id.seq);
        let mut value = id.pkid.to_be_bytes().to_vec();
        value.push(if id.released { RELEASED } else { 0 });
        let _ = self
            .inner
            .outbox_ids
            .insert(key, value)
            .map_err(|e| self.sled(e))?;
        if flush {
            self.flush()?;
        }
        Ok(())
    }

    /// Forgets every packet id of the session's outbox entries (the broker kept no
    /// session: they are sent again as new publishes). Not flushed.
    pub fn outbox_clear_packet_ids(&self, session: &str) -> Result<()> {
        check_name("session", session)?;
        clear_prefix(self, &self.inner.outbox_ids, &prefix(&[session]))
    }

    /// The packet ids recorded for the session's outbox entries, in sequence order.
    pub fn outbox_packet_ids(&self, session: &str) -> Result<Vec<StoredPacketId>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut out = Vec::new();
        for entry in self.inner.outbox_ids.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let seq =
                key_seq(&prefix, &key).map_err(|e| self.corrupt(format!("outbox_ids: {e}")))?;
            let (pkid, released) = match raw.as_ref() {
                [a, b, flags] if *flags & !RELEASED == 0 => {
                    (u16::from_be_bytes([*a, *b]), *flags & RELEASED != 0)
                }
                _ => {
                    return Err(self.corrupt(format!(
                        "outbox_ids {session:?} #{seq}: value of {} bytes",
                        raw.len()
                    )))
                }
            };
            if pkid == 0 {
                return Err(self.corrupt(format!("outbox_ids {session:?} #{seq}: packet id 0")));
            }
            out.push(StoredPacketId {
                seq,
                pkid,
                released,
            });
        }
        Ok(out)
    }

    /// Records that the incoming QoS 2 message `pkid` was handled (its PUBREC is due),
    /// and flushes: the record must be on disk before the PUBREC leaves.
    pub fn inbound_add(&self, session: &str, pkid: u16) -> Result<()> {
        check_name("session", session)?;
        let _ = self
            .inner
            .inbound
            .insert(inbound_key(session, pkid), &[][..])
            .map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The broker released `pkid` (PUBREL). Not flushed: a removal lost to a crash leaves
    /// a stale id, which only suppresses a re-sent (DUP) PUBLISH with that id — and the
    /// broker re-sends a PUBLISH only until it got our PUBREC.
    pub fn inbound_remove(&self, session: &str, pkid: u16) -> Result<()> {
        check_name("session", session)?;
        let _ = self
            .inner
            .inbound
            .remove(inbound_key(session, pkid))
            .map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// Forgets every handled incoming id of the session (the broker kept no session).
    /// Not flushed.
    pub fn inbound_clear(&self, session: &str) -> Result<()> {
        check_name("session", session)?;
        clear_prefix(self, &self.inner.inbound, &prefix(&[session]))
    }

    /// The handled incoming QoS 2 packet ids of the session, ascending.
    pub fn inbound_load(&self, session: &str) -> Result<Vec<u16>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut out = Vec::new();
        for key in self.inner.inbound.scan_prefix(&prefix).keys() {
            let key = key.map_err(|e| self.sled(e))?;
            match key.strip_prefix(prefix.as_slice()) {
                Some([a, b]) => out.push(u16::from_be_bytes([*a, *b])),
                _ => {
                    return Err(self.corrupt(format!(
                        "inbound: key {} is not <prefix> + 2-byte packet id",
                        String::from_utf8_lossy(&key)
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Removes the packet id of outbox entry `seq` (with the entry). Not flushed.
    pub(crate) fn outbox_id_remove(&self, prefix: &[u8], seq: u64) -> Result<()> {
        let _ = self
            .inner
            .outbox_ids
            .remove(seq_key(prefix, seq))
            .map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// The session-state trees, for [`Store::delete_session_state`].
    pub(crate) fn session_state_trees(&self) -> [&sled::Tree; 2] {
        [&self.inner.outbox_ids, &self.inner.inbound]
    }
}

fn inbound_key(session: &str, pkid: u16) -> Vec<u8> {
    let mut key = prefix(&[session]);
    key.extend_from_slice(&pkid.to_be_bytes());
    key
}

fn clear_prefix(store: &Store, tree: &sled::Tree, prefix: &[u8]) -> Result<()> {
    let mut batch = sled::Batch::default();
    for key in tree.scan_prefix(prefix).keys() {
        batch.remove(key.map_err(|e| store.sled(e))?);
    }
    tree.apply_batch(batch).map_err(|e| store.sled(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_round_trip_per_session_and_go_with_the_entry() {
        let store = Store::memory().unwrap();
        let a = StoredPacketId {
            seq: 3,
            pkid: 7,
            released: false,
        };
        let b = StoredPacketId {
            seq: 9,
            pkid: 65_535,
            released: true,
        };
        store.outbox_set_packet_id("s", b, true).unwrap();
        store.outbox_set_packet_id("s", a, false).unwrap();
        store
            .outbox_set_packet_id("t", StoredPacketId { seq: 1, ..a }, true)
            .unwrap();
        assert_eq!(store.outbox_packet_ids("s").unwrap(), vec![a, b]);
        store.outbox_id_remove(&prefix(&["s"]), 3).unwrap();
        assert_eq!(store.outbox_packet_ids("s").unwrap(), vec![b]);
        store.outbox_clear_packet_ids("s").unwrap();
        assert!(store.outbox_packet_ids("s").unwrap().is_empty());
        assert_eq!(store.outbox_packet_ids("t").unwrap().len(), 1);
    }

    #[test]
    fn an_entry_removed_without_its_id_leaves_the_ids_tree_alone() {
        let store = Store::memory().unwrap();
        let p = |t: &str| crate::store::StoredPublish {
            topic: t.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: 1,
            retain: false,
        };
        let seqs = store.outbox_push_many("s", &[p("a"), p("b")]).unwrap();
        let id = StoredPacketId {
            seq: seqs[0],
            pkid: 1,
            released: false,
        };
        store.outbox_set_packet_id("s", id, false).unwrap();
        assert!(store.outbox_remove_entry("s", seqs[1]).unwrap());
        assert!(!store.outbox_remove_entry("s", seqs[1]).unwrap(), "gone");
        assert_eq!(store.outbox_len("s").unwrap(), 1);
        assert_eq!(store.outbox_packet_ids("s").unwrap(), vec![id]);
        assert!(store.outbox_remove("s", seqs[0]).unwrap());
        assert!(store.outbox_packet_ids("s").unwrap().is_empty());
    }

    #[test]
    fn handled_incoming_ids_are_added_removed_and_cleared() {
        let store = Store::memory().unwrap();
        for id in [300, 2, 1] {
            store.inbound_add("s", id).unwrap();
        }
        store.inbound_add("t", 5).unwrap();
        assert_eq!(store.inbound_load("s").unwrap(), vec![1, 2, 300]);
        store.inbound_remove("s", 2).unwrap();
        assert_eq!(store.inbound_load("s").unwrap(), vec![1, 300]);
        store.inbound_clear("s").unwrap();
        assert!(store.inbound_load("s").unwrap().is_empty());
        assert_eq!(store.inbound_load("t").unwrap(), vec![5]);
    }

    #[test]
    fn a_bad_value_is_corrupt_not_a_panic() {
        let store = Store::memory().unwrap();
        let _ = store
            .inner
            .outbox_ids
            .insert(seq_key(&prefix(&["s"]), 1), &[0u8, 0, 0][..])
            .unwrap();
        assert!(store.outbox_packet_ids("s").is_err());
    }
}
