//! Migration 1, `initial`: the first layout.
//!
//! Trees `sessions`, `subscriptions` and `outbox` (plus `meta`, which the runner owns).
//! Every value is JSON after a `1` encoding byte; an outbox value is
//! `{"topic": .., "payload": [bytes as numbers], "qos": .., "retain": ..}`.
//!
//! Frozen: never edit an applied migration; add a new one instead.

use super::StepError;

/// Creates the trees of the first layout.
pub(super) fn run(db: &sled::Db) -> Result<(), StepError> {
    for tree in ["sessions", "subscriptions", "outbox"] {
        let _ = db.open_tree(tree)?;
    }
    Ok(())
}
