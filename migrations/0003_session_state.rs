//! Migration 3, `session_state`: the MQTT session state of persistent sessions.
//!
//! Creates two trees (see `src/store/session_state.rs`):
//! - `outbox_ids`: `session \0 seq (u64 BE)` → `[packet id u16 BE][flags: bit 0 released]`,
//!   the packet id an outbox entry went out with (and whether the broker's PUBREC came);
//! - `inbound`: `session \0 packet id (u16 BE)` → empty, the incoming QoS 2 messages
//!   handled and acknowledged with PUBREC, until their PUBREL.
//!
//! Nothing existing changes: an older store simply has no session state yet.
//! Frozen: never edit an applied migration; add a new one instead.

use super::StepError;

/// Creates the session-state trees.
pub(super) fn run(db: &sled::Db) -> Result<(), StepError> {
    for tree in ["outbox_ids", "inbound"] {
        let _ = db.open_tree(tree)?;
    }
    Ok(())
}
