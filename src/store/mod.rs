//! The persistence layer: one sled database per manager, with a versioned schema.
//!
//! [`Store`] is a cheap-to-clone handle; every call is synchronous and short (a few
//! B-tree operations), so an actor may call it on its own thread. Calls whose effect must
//! survive a crash before the caller acknowledges something (`outbox_push*`,
//! `held_push`, `held_take`, `subscriptions_save`, `delete_session_state`) end with a
//! `flush()` (an fsync); the others are made durable by sled's background flush within
//! half a second, or by an explicit [`Store::flush`].
//!
//! Trees (see `docs/ARCHITECTURE.md`, "Store"): `meta` (schema version), `sessions`
//! (`session` → [`SessionMeta`]), `subscriptions` (`session \0 filter` →
//! `{qos, routes}`), `outbox` (`session \0 seq` → [`StoredPublish`]) and `held`
//! (`session \0 route \0 seq` → [`StoredMessage`]). Every value starts with an encoding
//! byte (`codec.rs`). Migrations live in the top-level `migrations/` (run by `migrate.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

mod codec;
mod error;
mod files;
mod migrate;
mod queue;
mod session_state;
// `StoreWorker` is `pub` because `bench_internals` (feature `bench-internals`) shows the
// route table's targets, which hold one; outside that feature it is crate-private.
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
mod worker;

pub use codec::{SessionMeta, StoredMessage, StoredPublish, StoredSubscription};
pub use error::StoreError;
pub use migrate::SCHEMA_VERSION;
pub use queue::{unix_ms, HeldLimit, HeldLoaded, HeldPush, HeldTaken};
pub use session_state::StoredPacketId;
pub(crate) use worker::StoreWorker;
pub use worker::MAX_FLUSH_INTERVAL;

use codec::{check_name, check_qos, decode_json, encode_json, prefix, SubscriptionValue};
use files::{create_dir, existing_log, note_released, open_db, restrict_files};

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How an in-memory store names itself in errors.
const MEMORY_PATH: &str = "<memory>";

/// sled's page cache limit (its default is 1 GiB).
const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// The persistent state of every session of one manager.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The outbox batches being tracked: session prefix → first sequence number → (entries,
/// mask of those not yet removed).
type Batches = HashMap<Vec<u8>, BTreeMap<u64, (u64, u64)>>;

struct Inner {
    db: sled::Db,
    path: PathBuf,
    memory: bool,
    sessions: sled::Tree,
    subscriptions: sled::Tree,
    outbox: sled::Tree,
    held: sled::Tree,
    /// Packet ids of outbox entries (persistent sessions).
    outbox_ids: sled::Tree,
    /// Handled incoming QoS 2 packet ids awaiting PUBREL (persistent sessions).
    inbound: sled::Tree,
    /// Next sequence number per key prefix (`tree byte ++ prefix`), initialised from the
    /// highest stored key, so numbers are never reused while the store is open.
    next_seq: Mutex<HashMap<Vec<u8>, u64>>,
    /// The outbox batches (`BATCH` values) of each session prefix: first sequence
    /// number → (entries, a mask of those not yet removed: bit `i` is entry `first + i`). Filled
    /// by every push and load; a removal clears a bit, the last one removes the key.
    batches: Mutex<Batches>,
    /// Held messages per `session \0 route` prefix, counted once from the tree and kept
    /// up to date by every held write, so that a push costs no scan.
    held_counts: Mutex<HashMap<Vec<u8>, usize>>,
    /// Extra time every flush takes, in milliseconds (a test hook: a slow disk).
    flush_delay_ms: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.memory {
            note_released(&self.path);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("memory", &self.inner.memory)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it if needed) the store in directory `path`, upgrading an older
    /// schema in place.
    ///
    /// The directory is created with mode 0700 (an existing one is set to 0700) and the
    /// files in it to 0600. Fails with [`StoreError::InUse`] while another process has it
    /// open, [`StoreError::NewerVersion`] for a store of a newer build,
    /// [`StoreError::DirtyMigration`] after an interrupted upgrade and
    /// [`StoreError::Corrupt`] for anything that is not a store.
    pub fn open(path: &Path) -> Result<Store> {
        let io_err = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        create_dir(path).map_err(io_err)?;
        let log_existed = existing_log(path)?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY);
        let db = open_db(&config, path)?;
        restrict_files(path).map_err(io_err)?;
        Store::from_db(db, path.to_owned(), false, log_existed)
    }

    /// A store that lives in memory (a temporary sled database removed on drop).
    pub fn memory() -> Result<Store> {
        let path = PathBuf::from(MEMORY_PATH);
        let config = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_CAPACITY);
        let db = open_db(&config, &path)?;
        Store::from_db(db, path, true, false)
    }

    fn from_db(db: sled::Db, path: PathBuf, memory: bool, log_existed: bool) -> Result<Store> {
        let _ = migrate::run(&db, &path, log_existed)?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Sled {
                path: path.clone(),
                source,
            })
        };
        let inner = Inner {
            sessions: tree("sessions")?,
            subscriptions: tree("subscriptions")?,
            outbox: tree("outbox")?,
            held: tree("held")?,
            outbox_ids: tree("outbox_ids")?,
            inbound: tree("inbound")?,
            db,
            path,
            memory,
            next_seq: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashMap::new()),
            held_counts: Mutex::new(HashMap::new()),
            flush_delay_ms: std::sync::atomic::AtomicU64::new(0),
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Makes every flush take `delay` longer, as a slow disk would (feature
    /// `fault-injection`, for tests; never in production builds).
    #[cfg(feature = "fault-injection")]
    pub fn inject_flush_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .flush_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The store directory; `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        (!self.inner.memory).then_some(self.inner.path.as_path())
    }

    /// The schema version on disk (always [`SCHEMA_VERSION`] once opened).
    pub fn schema_version(&self) -> Result<u32> {
        let meta = self
            .inner
            .db
            .open_tree(migrate::META)
            .map_err(|e| self.sled(e))?;
        match meta.get(migrate::VERSION_KEY).map_err(|e| self.sled(e))? {
            Some(raw) => <[u8; 4]>::try_from(&raw[..])
                .map(u32::from_be_bytes)
                .map_err(|_| self.corrupt("meta schema_version is not 4 bytes".to_owned())),
            None => Err(self.corrupt("meta schema_version is missing".to_owned())),
        }
    }

    /// Writes everything to disk (fsync). Call it at shutdown. On the store worker's
    /// thread, inside a group, the flush is owed instead and made once for the group
    /// before its answers go out (see the `worker` module).
    pub fn flush(&self) -> Result<()> {
        if worker::defer_flush() {
            return Ok(());
        }
        let delay = self
            .inner
            .flush_delay_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        self.inner.db.flush().map(drop).map_err(|e| self.sled(e))
    }

    /// The session's metadata, if any was saved.
    pub fn session_meta_get(&self, session: &str) -> Result<Option<SessionMeta>> {
        check_name("session", session)?;
        let raw = self.inner.sessions.get(session).map_err(|e| self.sled(e))?;
        raw.map(|raw| {
            decode_json(&raw).map_err(|e| self.corrupt(format!("sessions {session:?}: {e}")))
        })
        .transpose()
    }

    /// Saves the session's metadata (not flushed: sled's background flush, or the next
    /// flushing call, makes it durable).
    pub fn session_meta_put(&self, session: &str, meta: &SessionMeta) -> Result<()> {
        check_name("session", session)?;
        let _ = self
            .inner
            .sessions
            .insert(session, encode_json(meta))
            .map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// Every session with saved metadata, by name.
    pub fn session_meta_list(&self) -> Result<Vec<(String, SessionMeta)>> {
        let mut out = Vec::new();
        for entry in self.inner.sessions.iter() {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let name = String::from_utf8(key.to_vec())
                .map_err(|_| self.corrupt("sessions: a key is not UTF-8".to_owned()))?;
            let meta =
                decode_json(&raw).map_err(|e| self.corrupt(format!("sessions {name:?}: {e}")))?;
            out.push((name, meta));
        }
        Ok(out)
    }

    /// Replaces the session's persisted subscriptions with `subs`, atomically (one
    /// batch), and flushes.
    pub fn subscriptions_save(&self, session: &str, subs: &[StoredSubscription]) -> Result<()> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut batch = sled::Batch::default();
        for key in self.inner.subscriptions.scan_prefix(&prefix).keys() {
            batch.remove(key.map_err(|e| self.sled(e))?);
        }
        for sub in subs {
            check_name("filter", &sub.filter)?;
            check_qos(sub.qos)?;
            let value = SubscriptionValue {
                qos: sub.qos,
                routes: sub.routes.clone(),
            };
            batch.insert(
                [&prefix[..], sub.filter.as_bytes()].concat(),
                encode_json(&value),
            );
        }
        self.inner
            .subscriptions
            .apply_batch(batch)
            .map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The session's persisted subscriptions, ordered by filter (bytewise).
    pub fn subscriptions_load(&self, session: &str) -> Result<Vec<StoredSubscription>> {
        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let mut out = Vec::new();
        for entry in self.inner.subscriptions.scan_prefix(&prefix) {
            let (key, raw) = entry.map_err(|e| self.sled(e))?;
            let filter = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| {
                    self.corrupt(format!(
                        "subscriptions of {session:?}: a filter is not UTF-8"
                    ))
                })?
                .to_owned();
            let value: SubscriptionValue = decode_json(&raw)
                .map_err(|e| self.corrupt(format!("subscription {session:?} {filter:?}: {e}")))?;
            out.push(StoredSubscription {
                filter,
                qos: value.qos,
                routes: value.routes,
            });
        }
        Ok(out)
    }

    /// Deletes the session's outbox (with its packet ids), subscriptions, held messages and
    /// handled incoming ids (and its metadata
    /// unless `keep_meta`) in one transaction, and flushes. Other sessions are untouched.
    pub fn delete_session_state(&self, session: &str, keep_meta: bool) -> Result<()> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;

        check_name("session", session)?;
        let prefix = prefix(&[session]);
        let keys = |tree: &sled::Tree| -> Result<Vec<sled::IVec>> {
            tree.scan_prefix(&prefix)
                .keys()
                .map(|k| k.map_err(|e| self.sled(e)))
                .collect()
        };
        let (outbox, subs, held) = (
            keys(&self.inner.outbox)?,
            keys(&self.inner.subscriptions)?,
            keys(&self.inner.held)?,
        );
        let [ids_tree, inbound_tree] = self.session_state_trees();
        let (ids, inbound) = (keys(ids_tree)?, keys(inbound_tree)?);
        self.held_counts().retain(|k, _| !k.starts_with(&prefix));
        let i = &self.inner;
        let result: Result<(), TransactionError<std::convert::Infallible>> = (
            &i.outbox,
            &i.subscriptions,
            &i.held,
            &i.sessions,
            &i.outbox_ids,
            &i.inbound,
        )
            .transaction(|(o, s, h, m, oi, ib)| {
                for (tree, keys) in [
                    (o, &outbox),
                    (s, &subs),
                    (h, &held),
                    (oi, &ids),
                    (ib, &inbound),
                ] {
                    for key in keys {
                        let _ = tree.remove(key)?;
                    }
                }
                if !keep_meta {
                    let _ = m.remove(session)?;
                }
                Ok::<(), ConflictableTransactionError<std::convert::Infallible>>(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(self.sled(e)),
            Err(TransactionError::Abort(never)) => match never {},
        }
        self.forget_seqs(&prefix);
        self.flush()
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.inner.path.clone(),
            source,
        }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            detail,
        }
    }

    /// Hands out the next sequence number below `prefix` of `tree` (tagged by `tag`).
    fn next_seq(&self, tag: u8, tree: &sled::Tree, prefix: &[u8]) -> Result<u64> {
        let mut map = self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = [&[tag][..], prefix].concat();
        let next = match map.get(&slot) {
            Some(next) => *next,
            // After the last stored entry (a batch holds several).
            None => match tree.scan_prefix(prefix).next_back() {
                Some(entry) => {
                    let (key, value) = entry.map_err(|e| self.sled(e))?;
                    let last = codec::key_seq(prefix, &key).map_err(|e| self.corrupt(e))?;
                    let n = codec::entry_count(&value).map_err(|e| self.corrupt(e))?;
                    last.saturating_add(n)
                }
                None => 0,
            },
        };
        let _ = map.insert(slot, next.saturating_add(1));
        Ok(next)
    }

    /// Forgets the counters of every prefix starting with `prefix`.
    fn forget_seqs(&self, prefix: &[u8]) {
        let mut map = self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.retain(|slot, _| !slot[1..].starts_with(prefix));
        self.batches().retain(|p, _| !p.starts_with(prefix));
    }

    /// The outbox batches being tracked (see `Inner::batches`).
    fn batches(&self) -> std::sync::MutexGuard<'_, Batches> {
        self.inner
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
