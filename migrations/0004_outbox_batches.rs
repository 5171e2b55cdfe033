//! Migration 4, `outbox_batches`: the outbox may hold several QoS 1 publishes under one
//! key (a `BATCH` value, encoding byte 3; see `src/store/codec.rs`).
//!
//! Nothing existing changes: every stored entry stays readable as it is. The version
//! exists so that an older build, which cannot read a batch, refuses the store instead
//! of misreading it.
//! Frozen: never edit an applied migration; add a new one instead.

use super::StepError;

/// Nothing to convert.
pub(super) fn run(_db: &sled::Db) -> Result<(), StepError> {
    Ok(())
}
