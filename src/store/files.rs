//! The store directory: creating it owner-only, and opening sled in it without taking
//! garbage for a store.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Result, StoreError};

/// Creates `path` (and its parents) with mode 0700; an existing directory is set to 0700.
pub(super) fn create_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// How long [`open_db`] waits for a directory that a `Store` of this process has just
/// closed: sled's background threads let go of the lock shortly after the last handle
/// is dropped.
const RELEASE_GRACE: Duration = Duration::from_secs(10);

/// Directories whose `Store` this process closed, and when.
static RELEASED: Mutex<Vec<(PathBuf, Instant)>> = Mutex::new(Vec::new());

fn release_key(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Records that the last handle of the store at `path` was dropped, so that reopening it
/// in this process waits for sled to let go instead of failing with `InUse`.
pub(super) fn note_released(path: &Path) {
    let key = release_key(path);
    let mut released = RELEASED.lock().unwrap_or_else(PoisonError::into_inner);
    released.retain(|(p, at)| p != &key && at.elapsed() < RELEASE_GRACE);
    released.push((key, Instant::now()));
}

/// The store at `path` is open again: a later lock conflict is another handle's.
fn forget_released(path: &Path) {
    let key = release_key(path);
    let mut released = RELEASED.lock().unwrap_or_else(PoisonError::into_inner);
    released.retain(|(p, at)| p != &key && at.elapsed() < RELEASE_GRACE);
}

/// Whether this process closed the store at `path` less than [`RELEASE_GRACE`] ago.
fn recently_released(path: &Path) -> bool {
    let key = release_key(path);
    let released = RELEASED.lock().unwrap_or_else(PoisonError::into_inner);
    released
        .iter()
        .any(|(p, at)| p == &key && at.elapsed() < RELEASE_GRACE)
}

/// Opens sled, mapping its errors (and, as a last resort, a panic on garbage input) to
/// a [`StoreError`]. A lock held by another process fails at once with
/// [`StoreError::InUse`]; one still held by a store this process has just closed is
/// waited for (at most [`RELEASE_GRACE`] after the close).
pub(super) fn open_db(config: &sled::Config, path: &Path) -> Result<sled::Db> {
    loop {
        match open_db_once(config, path) {
            Err(StoreError::InUse { .. }) if recently_released(path) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(db) => {
                forget_released(path);
                return Ok(db);
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_db_once(config: &sled::Config, path: &Path) -> Result<sled::Db> {
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
