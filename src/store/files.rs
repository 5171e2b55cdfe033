//! The store directory: creating it owner-only, and opening sled in it without taking
//! garbage for a store.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use super::{Result, StoreError};

/// Creates `path` (and its parents) with mode 0700; an existing directory is set to 0700.
pub(super) fn create_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Opens sled, mapping its errors (and, as a last resort, a panic on garbage input) to
/// a [`StoreError`].
pub(super) fn open_db(config: &sled::Config, path: &Path) -> Result<sled::Db> {
    let opened = panic::catch_unwind(AssertUnwindSafe(|| config.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) => Err(StoreError::InUse {
            path: path.to_owned(),
        }),
        Ok(Err(sled::Error::Io(source))) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
        Ok(Err(
            e @ (sled::Error::Corruption { .. }
            | sled::Error::Unsupported(_)
            | sled::Error::ReportableBug(_)),
        )) => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        Ok(Err(source)) => Err(StoreError::Sled {
            path: path.to_owned(),
            source,
        }),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "sled failed while reading the database files".to_owned(),
        }),
    }
}

/// Whether `path` already holds a non-empty sled log (`db`); refuses one without the
/// `conf` file that sled writes before creating it (not sled's: sled would silently
/// start an empty log over it).
pub(super) fn existing_log(path: &Path) -> Result<bool> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let db_len = match fs::metadata(path.join("db")) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    match fs::metadata(path.join("conf")) {
        Ok(_) => Ok(db_len > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && db_len > 0 => {
            Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "a {db_len}-byte db file without a conf file is not a sled database"
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// sled reports a held lock as an `Other` io error "could not acquire lock on ..." that
/// wraps `WouldBlock` in its text.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Makes the files sled created owner-only (the 0700 directory already keeps others out;
/// this also covers a copy of the files made elsewhere).
pub(super) fn restrict_files(path: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let mode = if entry.file_type()?.is_dir() {
            0o700
        } else {
            0o600
        };
        fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
