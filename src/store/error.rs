//! [`StoreError`]: everything that can go wrong opening or using a [`Store`](super::Store).

use std::io;
use std::path::PathBuf;

/// An error of the persistence layer.
///
/// Every message leads with the store's directory (`store data/: ...`); an in-memory
/// store names itself `<memory>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Store` in this process) holds the directory's lock.
    #[error("store {}: in use by another process", path.display())]
    InUse {
        /// The store directory.
        path: PathBuf,
    },

    /// The directory was written by a newer build; this one refuses to touch it.
    #[error(
        "store {}: schema version {found} is newer than version {supported}, the newest this build supports",
        path.display()
    )]
    NewerVersion {
        /// The store directory.
        path: PathBuf,
        /// The schema version found on disk.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },

    /// The recorded schema version is not newer than this build, yet no migration has it.
    #[error(
        "store {}: schema version {version} is not a version any migration of this build produces (known: 1 to {latest})",
        path.display()
    )]
    UnknownVersion {
        /// The store directory.
        path: PathBuf,
        /// The schema version found on disk.
        version: u32,
        /// The newest schema version this build knows.
        latest: u32,
    },

    /// A migration was applied under a different name than the one this build has for
    /// its version: the two builds disagree about what the schema is.
    #[error(
        "store {}: migration {version} was applied as {applied:?} but this build knows it as {known:?}",
        path.display()
    )]
    MigrationMismatch {
        /// The store directory.
        path: PathBuf,
        /// The migration's version.
        version: u32,
        /// The name recorded on disk.
        applied: String,
        /// The name this build has.
        known: &'static str,
    },

    /// A migration started but never finished (the process died during it); the data
    /// may be half converted, so the store is not opened.
    #[error(
        "store {}: migration to schema version {version} did not complete; restore the directory from a backup",
        path.display()
    )]
    DirtyMigration {
        /// The store directory.
        path: PathBuf,
        /// The version the interrupted migration was heading for.
        version: u32,
    },

    /// A migration step failed; nothing after it was applied.
    #[error("store {}: while applying migration {version} ({name}): {detail}", path.display())]
    Migration {
        /// The store directory.
        path: PathBuf,
        /// The failing migration's version.
        version: u32,
        /// The failing migration's name.
        name: &'static str,
        /// What went wrong.
        detail: String,
    },

    /// The directory or a stored value is not what this build wrote.
    #[error("store {}: corrupt: {detail}", path.display())]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What was found, and where.
        detail: String,
    },

    /// Creating or opening the directory or its files failed.
    #[error("store {}: {source}", path.display())]
    Io {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// sled failed while reading or writing.
    #[error("store {}: {source}", path.display())]
    Sled {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        source: sled::Error,
    },

    /// A session, route or filter name that cannot be a key (empty, or holding a NUL
    /// byte, which the key layout uses as separator).
    #[error("store: invalid {what} name {name:?}: must be non-empty and contain no NUL byte")]
    InvalidName {
        /// `"session"`, `"route"` or `"filter"`.
        what: &'static str,
        /// The refused name.
        name: String,
    },

    /// A QoS value other than 0, 1 or 2 given to be stored.
    #[error("store: invalid QoS {0}: must be 0, 1 or 2")]
    InvalidQos(u8),
}
