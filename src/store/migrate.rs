//! Schema versioning: runs the migrations of the top-level `migrations/` directory.
//!
//! The `meta` tree holds:
//!
//! - `schema_version`: u32 big-endian, the last migration applied (absent: none yet);
//! - `migrating_to`: u32 big-endian, present only while a migration runs;
//! - `migration/<u32 BE>`: the name of each applied migration (checked like sqlx's
//!   checksums: a build that knows version N under another name refuses the store).
//!
//! On open, in order: a `migrating_to` marker refuses the store (a step died half way);
//! a version newer than [`SCHEMA_VERSION`] is refused; a version no migration produces is
//! refused; then each pending step runs as: write the marker and flush, run the step
//! (each is one atomic sled batch or transaction), then in one batch set the version,
//! record the name and clear the marker, and flush.

use std::path::Path;

use super::StoreError;

#[path = "../../migrations/0001_initial.rs"]
mod m0001;
#[path = "../../migrations/0002_binary_messages.rs"]
mod m0002;
#[path = "../../migrations/0003_session_state.rs"]
mod m0003;
#[path = "../../migrations/0004_outbox_batches.rs"]
mod m0004;

/// The schema version this build writes: the last migration's.
pub const SCHEMA_VERSION: u32 = 4;

pub(crate) const META: &str = "meta";
pub(crate) const VERSION_KEY: &[u8] = b"schema_version";
pub(crate) const MARKER_KEY: &[u8] = b"migrating_to";
const APPLIED_PREFIX: &[u8] = b"migration/";

/// Why a migration step failed; the runner adds path, version and name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error("{0}")]
    Corrupt(String),
}

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The schema version after this step.
    pub(crate) version: u32,
    /// A short snake_case name, recorded on disk.
    pub(crate) name: &'static str,
    /// The step itself.
    pub(crate) run: fn(&sled::Db) -> Result<(), StepError>,
}

/// Every migration, in order; versions start at 1 and have no gaps.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        run: m0001::run,
    },
    Migration {
        version: 2,
        name: "binary_messages",
        run: m0002::run,
    },
    Migration {
        version: 3,
        name: "session_state",
        run: m0003::run,
    },
    Migration {
        version: 4,
        name: "outbox_batches",
        run: m0004::run,
    },
];

/// Brings `db` to [`SCHEMA_VERSION`], returning the version it found (0: a new store).
///
/// `log_existed`: the directory already held a non-empty sled log before this open, so a
/// missing schema version means the data was lost (sled drops a log tail that fails its
/// checksums and starts empty) rather than a new store.
pub(crate) fn run(db: &sled::Db, path: &Path, log_existed: bool) -> Result<u32, StoreError> {
    let sled_err = |source| StoreError::Sled {
        path: path.to_owned(),
        source,
    };
    let meta = db.open_tree(META).map_err(sled_err)?;

    if let Some(raw) = meta.get(MARKER_KEY).map_err(sled_err)? {
        let version = decode_u32(path, "migrating_to", &raw)?;
        return Err(StoreError::DirtyMigration {
            path: path.to_owned(),
            version,
        });
    }
    let found = match meta.get(VERSION_KEY).map_err(sled_err)? {
        Some(raw) => {
            let found = decode_u32(path, "schema_version", &raw)?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerVersion {
                    path: path.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if !MIGRATIONS.iter().any(|m| m.version == found) {
                return Err(StoreError::UnknownVersion {
                    path: path.to_owned(),
                    version: found,
                    latest: SCHEMA_VERSION,
                });
            }
            found
        }
        None if log_existed => {
            refuse_foreign_data(db, path)?;
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: "the database files hold no schema version: their log is unreadable \
                         (or a first open died before writing it; then remove the directory)"
                    .to_owned(),
            });
        }
        None => {
            refuse_foreign_data(db, path)?;
            0
        }
    };
    check_applied_names(&meta, path)?;

    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        apply(db, &meta, path, migration)?;
    }
    Ok(found)
}

/// Runs one step between its marker writes.
fn apply(db: &sled::Db, meta: &sled::Tree, path: &Path, m: &Migration) -> Result<(), StoreError> {
    let sled_err = |source| StoreError::Sled {
        path: path.to_owned(),
        source,
    };
    let version = m.version.to_be_bytes();
    meta.insert(MARKER_KEY, &version).map_err(sled_err)?;
    db.flush().map_err(sled_err)?;

    (m.run)(db).map_err(|e| StoreError::Migration {
        path: path.to_owned(),
        version: m.version,
        name: m.name,
        detail: e.to_string(),
    })?;

    let mut done = sled::Batch::default();
    done.insert(VERSION_KEY, &version);
    done.insert([APPLIED_PREFIX, &version[..]].concat(), m.name.as_bytes());
    done.remove(MARKER_KEY);
    meta.apply_batch(done).map_err(sled_err)?;
    db.flush().map_err(sled_err)?;
    tracing::info!(store = %path.display(), version = m.version, name = m.name, "applied store migration");
    Ok(())
}

/// A database without a schema version must be empty: refuse someone else's sled data.
fn refuse_foreign_data(db: &sled::Db, path: &Path) -> Result<(), StoreError> {
    let sled_err = |source| StoreError::Sled {
        path: path.to_owned(),
        source,
    };
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(sled_err)?;
        if !tree.is_empty() {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "tree {:?} holds data but there is no schema version: not an mqtt-sessions store",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
    }
    Ok(())
}

/// Every recorded `migration/<v>` must be a migration this build has, under that name.
fn check_applied_names(meta: &sled::Tree, path: &Path) -> Result<(), StoreError> {
    for entry in meta.scan_prefix(APPLIED_PREFIX) {
        let (key, name) = entry.map_err(|source| StoreError::Sled {
            path: path.to_owned(),
            source,
        })?;
        let version = decode_u32(path, "migration record", &key[APPLIED_PREFIX.len()..])?;
        let applied = String::from_utf8_lossy(&name).into_owned();
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(m) if m.name == applied => {}
            Some(m) => {
                return Err(StoreError::MigrationMismatch {
                    path: path.to_owned(),
                    version,
                    applied,
                    known: m.name,
                })
            }
            // A newer build's record; the version check refuses or accepts the store.
            None if version > SCHEMA_VERSION => {}
            None => {
                return Err(StoreError::UnknownVersion {
                    path: path.to_owned(),
                    version,
                    latest: SCHEMA_VERSION,
                })
            }
        }
    }
    Ok(())
}

fn decode_u32(path: &Path, what: &str, raw: &[u8]) -> Result<u32, StoreError> {
    <[u8; 4]>::try_from(raw)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "meta {what} is {} bytes, expected a 4-byte big-endian u32",
                raw.len()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_dense_ascending_and_end_at_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_failing_step_names_its_version_and_leaves_the_marker() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree(META).unwrap();
        let broken = Migration {
            version: 1,
            name: "broken",
            run: |_| Err(StepError::Corrupt("boom".into())),
        };
        let err = apply(&db, &meta, Path::new("x"), &broken).unwrap_err();
        assert_eq!(
            err.to_string(),
            "store x: while applying migration 1 (broken): boom"
        );
        assert!(meta.get(MARKER_KEY).unwrap().is_some());
        let err = run(&db, Path::new("x"), false).unwrap_err();
        assert!(
            matches!(err, StoreError::DirtyMigration { version: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_renamed_migration_is_refused() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        run(&db, Path::new("x"), false).unwrap();
        let meta = db.open_tree(META).unwrap();
        meta.insert([APPLIED_PREFIX, &1u32.to_be_bytes()[..]].concat(), "other")
            .unwrap();
        let err = run(&db, Path::new("x"), false).unwrap_err();
        assert!(
            matches!(err, StoreError::MigrationMismatch { version: 1, .. }),
            "{err}"
        );
    }
}
