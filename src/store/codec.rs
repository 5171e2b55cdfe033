//! Stored value types, their byte encodings and the key layout.
//!
//! Every value starts with one byte naming its encoding:
//!
//! - `JSON` (`1`): the rest is a JSON document (session metadata, subscriptions; in
//!   schema version 1 also outbox entries).
//! - `FRAME` (`2`): a binary message frame (outbox and held messages since schema
//!   version 2), so a payload is stored as raw bytes instead of a JSON array of numbers:
//!
//! ```text
//! [0]        2 (encoding)
//! [1]        qos (0, 1 or 2)
//! [2]        flags: bit 0 = retain (other bits zero)
//! [3..11]    received_at_ms, u64 big-endian (0 for outbox entries)
//! [11..15]   topic length n, u32 big-endian
//! [15..15+n] topic, UTF-8
//! [15+n..]   payload
//! ```
//!
//! - `BATCH` (`3`): several outbox entries under one key (since schema version 4), the
//!   key's sequence number being the first entry's and the others following it one by
//!   one; one write and one removal for a group of QoS 1 publishes instead of one each:
//!
//! ```text
//! [0]        3 (encoding)
//! [1..5]     count n (2 ..= 64), u32 big-endian
//! then n times:
//! [0..4]     length m, u32 big-endian
//! [4..4+m]   a FRAME value (above)
//! ```
//!
//! These functions are pure: errors are plain strings that the caller wraps with the
//! store path and the key (`StoreError::Corrupt`).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Encoding byte of JSON values.
pub(crate) const JSON: u8 = 1;
/// Encoding byte of binary message frames.
pub(crate) const FRAME: u8 = 2;
/// Encoding byte of outbox batches (several frames under one key).
pub(crate) const BATCH: u8 = 3;
/// Most entries in one outbox batch (their removals are tracked in a `u64` mask).
pub(crate) const BATCH_MAX: usize = 64;

/// Key separator: NUL never occurs in a session, route or filter name.
pub(crate) const SEP: u8 = 0;

/// A QoS >= 1 publish accepted for sending and not yet acknowledged (the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPublish {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
}

/// A message received for a durable route that is not registered yet (held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// When it was received, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// What is remembered about a session between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionMeta {
    /// The MQTT client id the session used (a generated one must be reused).
    pub client_id: String,
    /// When the session last connected, in milliseconds since the Unix epoch.
    pub last_connected_ms: Option<u64>,
    /// When the session last lost or closed its connection, in milliseconds since the
    /// Unix epoch.
    pub last_disconnected_ms: Option<u64>,
}

/// One persisted subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The topic filter (the key; not repeated in the value).
    pub filter: String,
    /// The QoS subscribed with.
    pub qos: u8,
    /// Names of the durable routes that want this filter.
    pub routes: Vec<String>,
}

/// The value of a `subscriptions` entry (the filter is in the key).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SubscriptionValue {
    pub(crate) qos: u8,
    pub(crate) routes: Vec<String>,
}

/// The fields shared by both message types, as framed on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) received_at_ms: u64,
}

const HEADER: usize = 15;

impl Frame {
    /// Encodes as [`FRAME`]; refuses a QoS above 2 or a topic longer than u32.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        check_qos(self.qos)?;
        let topic_len = u32::try_from(self.topic.len()).map_err(|_| StoreError::InvalidName {
            what: "topic",
            name: self.topic.clone(),
        })?;
        let mut out = Vec::with_capacity(HEADER + self.topic.len() + self.payload.len());
        out.push(FRAME);
        out.push(self.qos);
        out.push(u8::from(self.retain));
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes a [`FRAME`] value.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "message frame of {} bytes is truncated",
                bytes.len()
            ));
        }
        if bytes[0] != FRAME {
            return Err(format!("unknown value encoding {}", bytes[0]));
        }
        let qos = bytes[1];
        if qos > 2 {
            return Err(format!("invalid qos {qos}"));
        }
        let retain = match bytes[2] {
            0 => false,
            1 => true,
            other => return Err(format!("invalid flags {other:#04x}")),
        };
        let received_at_ms = u64::from_be_bytes(array(&bytes[3..11]));
        let topic_len = u32::from_be_bytes(array(&bytes[11..HEADER])) as usize;
        let topic_end = HEADER
            .checked_add(topic_len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| format!("topic length {topic_len} exceeds the frame"))?;
        let topic = std::str::from_utf8(&bytes[HEADER..topic_end])
            .map_err(|e| format!("topic is not UTF-8: {e}"))?
            .to_owned();
        let payload = Bytes::copy_from_slice(&bytes[topic_end..]);
        Ok(Frame {
            topic,
            payload,
            qos,
            retain,
            received_at_ms,
        })
    }
}

/// Encodes encoded [`FRAME`] values as one [`BATCH`] value.
pub(crate) fn encode_batch(frames: &[Vec<u8>]) -> Vec<u8> {
    let len = 5 + frames.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(BATCH);
    out.extend_from_slice(
        &u32::try_from(frames.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for f in frames {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// How many entries a stored outbox value holds: 1 for a [`FRAME`], the count of a
/// [`BATCH`].
pub(crate) fn entry_count(value: &[u8]) -> Result<u64, String> {
    match value.first() {
        Some(&BATCH) if value.len() >= 5 => {
            let n = u32::from_be_bytes(array(&value[1..5]));
            if n == 0 || n as usize > BATCH_MAX {
                return Err(format!("batch of {n} entries"));
            }
            Ok(u64::from(n))
        }
        Some(&BATCH) => Err("batch header truncated".to_string()),
        _ => Ok(1),
    }
}

/// The frames of a stored outbox value: itself for a [`FRAME`], each entry of a
/// [`BATCH`].
pub(crate) fn decode_entries(value: &[u8]) -> Result<Vec<Frame>, String> {
    if value.first() != Some(&BATCH) {
        return Frame::decode(value).map(|f| vec![f]);
    }
    let n = entry_count(value)?;
    let mut rest = &value[5..];
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        if rest.len() < 4 {
            return Err(format!("batch entry {i} truncated"));
        }
        let m = u32::from_be_bytes(array(&rest[..4])) as usize;
        let frame = rest
            .get(4..4 + m)
            .ok_or_else(|| format!("batch entry {i} of {m} bytes exceeds the value"))?;
        out.push(Frame::decode(frame).map_err(|e| format!("batch entry {i}: {e}"))?);
        rest = &rest[4 + m..];
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last batch entry", rest.len()));
    }
    Ok(out)
}

impl From<&StoredPublish> for Frame {
    fn from(p: &StoredPublish) -> Frame {
        Frame {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            received_at_ms: 0,
        }
    }
}

impl From<Frame> for StoredPublish {
    fn from(f: Frame) -> StoredPublish {
        StoredPublish {
            topic: f.topic,
            payload: f.payload,
            qos: f.qos,
            retain: f.retain,
        }
    }
}

impl From<&StoredMessage> for Frame {
    fn from(m: &StoredMessage) -> Frame {
        Frame {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            received_at_ms: m.received_at_ms,
        }
    }
}

impl From<Frame> for StoredMessage {
    fn from(f: Frame) -> StoredMessage {
        StoredMessage {
            topic: f.topic,
            payload: f.payload,
            qos: f.qos,
            retain: f.retain,
            received_at_ms: f.received_at_ms,
        }
    }
}

/// Copies a slice of known length 8 or 4 into an array (lengths are checked by callers).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Refuses a QoS above 2.
pub(crate) fn check_qos(qos: u8) -> Result<(), StoreError> {
    if qos > 2 {
        return Err(StoreError::InvalidQos(qos));
    }
    Ok(())
}

/// Encodes a value as [`JSON`].
pub(crate) fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![JSON];
    // Serialising these plain structs into a Vec cannot fail (no maps with non-string
    // keys, no I/O); fall back to an empty document rather than panicking.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(1);
        out.extend_from_slice(b"null");
    }
    out
}

/// Decodes a [`JSON`] value.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&JSON, rest)) => serde_json::from_slice(rest).map_err(|e| format!("bad JSON: {e}")),
        Some((other, _)) => Err(format!("unknown value encoding {other}")),
        None => Err("empty value".to_owned()),
    }
}

/// Refuses names that cannot be part of a key.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.as_bytes().contains(&SEP) {
        return Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// `a \0 b \0 ... \0` — the prefix of every key below the given names.
pub(crate) fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 8);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(SEP);
    }
    out
}

/// `prefix ++ seq (u64 big-endian)`, so keys sort by sequence within a prefix.
pub(crate) fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number at the end of a `prefix ++ seq` key.
pub(crate) fn key_seq(prefix: &[u8], key: &[u8]) -> Result<u64, String> {
    match key.strip_prefix(prefix) {
        Some(rest) if rest.len() == 8 => Ok(u64::from_be_bytes(array(rest))),
        _ => Err(format!(
            "key {} is not <prefix> + 8-byte sequence",
            String::from_utf8_lossy(key)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, payload: &'static [u8]) -> Frame {
        Frame {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: 1,
            retain: true,
            received_at_ms: 42,
        }
    }

    #[test]
    fn frame_round_trips() {
        for f in [
            frame("a/b", b"hello"),
            frame("", b""),
            frame("x", &[0, 255, 0]),
        ] {
            assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn frame_rejects_bad_input_without_panicking() {
        let good = frame("a/b", b"hi").encode().unwrap();
        // Any truncation inside the header or the topic is an error, never a panic.
        for len in 0..HEADER + "a/b".len() {
            assert!(Frame::decode(&good[..len]).is_err(), "len {len}");
        }
        let mut bad_qos = good.clone();
        bad_qos[1] = 3;
        assert!(Frame::decode(&bad_qos).is_err());
        let mut huge_topic = good.clone();
        huge_topic[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Frame::decode(&huge_topic).is_err());
        let mut json = good;
        json[0] = JSON;
        assert!(Frame::decode(&json).is_err());
    }

    #[test]
    fn frame_refuses_qos_above_two() {
        let mut f = frame("t", b"");
        f.qos = 3;
        assert!(matches!(f.encode(), Err(StoreError::InvalidQos(3))));
    }

    #[test]
    fn json_values_carry_the_encoding_byte() {
        let meta = SessionMeta {
            client_id: "c".into(),
            ..SessionMeta::default()
        };
        let bytes = encode_json(&meta);
        assert_eq!(bytes[0], JSON);
        assert_eq!(decode_json::<SessionMeta>(&bytes).unwrap(), meta);
        assert!(decode_json::<SessionMeta>(&[]).is_err());
        assert!(decode_json::<SessionMeta>(&[9, b'{', b'}']).is_err());
        assert!(decode_json::<SessionMeta>(&[JSON, 0xff]).is_err());
    }

    #[test]
    fn seq_keys_sort_by_sequence_and_parse_back() {
        let p = prefix(&["s"]);
        let keys: Vec<_> = [0u64, 1, 255, 256, u64::MAX]
            .iter()
            .map(|s| seq_key(&p, *s))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(key_seq(&p, &keys[3]).unwrap(), 256);
        assert!(key_seq(&p, b"s\0short").is_err());
        assert!(key_seq(&prefix(&["t"]), &keys[0]).is_err());
    }

    #[test]
    fn names_with_nul_or_empty_are_refused() {
        assert!(check_name("session", "a").is_ok());
        assert!(check_name("session", "").is_err());
        assert!(check_name("route", "a\0b").is_err());
    }
}
