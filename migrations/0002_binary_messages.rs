//! Migration 2, `binary_messages`: outbox values become binary frames; the `held` tree.
//!
//! Version 1 stored an outbox payload as a JSON array of numbers (about 3.5 bytes per
//! payload byte, parsed on every replay). This step rewrites every outbox value into the
//! binary message frame (encoding byte `2`, see `src/store/codec.rs`) in one atomic
//! batch, and creates `held` (messages for durable routes not registered yet), whose
//! values use the same frame.
//!
//! Idempotent: values already framed are left alone.
//! Frozen: never edit an applied migration; add a new one instead.

use serde::Deserialize;

use super::StepError;
use crate::store::codec::Frame;

/// An outbox value of schema version 1 (after its `1` encoding byte).
#[derive(Deserialize)]
struct V1Publish {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
}

/// Rewrites the outbox and creates `held`.
pub(super) fn run(db: &sled::Db) -> Result<(), StepError> {
    let outbox = db.open_tree("outbox")?;
    let mut batch = sled::Batch::default();
    let mut converted = 0usize;
    for entry in outbox.iter() {
        let (key, value) = entry?;
        let corrupt = |detail: String| {
            StepError::Corrupt(format!(
                "outbox key {}: {detail}",
                String::from_utf8_lossy(&key)
            ))
        };
        match value.first() {
            Some(1) => {
                let old: V1Publish = serde_json::from_slice(&value[1..])
                    .map_err(|e| corrupt(format!("bad JSON: {e}")))?;
                let frame = Frame {
                    topic: old.topic,
                    payload: old.payload.into(),
                    qos: old.qos,
                    retain: old.retain,
                    received_at_ms: 0,
                };
                let bytes = frame.encode().map_err(|e| corrupt(e.to_string()))?;
                batch.insert(key, bytes);
                converted += 1;
            }
            Some(2) => {}
            Some(other) => return Err(corrupt(format!("unknown value encoding {other}"))),
            None => return Err(corrupt("empty value".to_owned())),
        }
    }
    outbox.apply_batch(batch)?;
    let _ = db.open_tree("held")?;
    tracing::debug!(converted, "outbox values rewritten as binary frames");
    Ok(())
}
