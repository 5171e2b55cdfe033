//! The sled store: every tree round-trips, survives a reopen, upgrades an old layout and
//! refuses what it must not open.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use mqtt_sessions::store::{
    HeldLimit, HeldPush, SessionMeta, Store, StoreError, StoredMessage, StoredPublish,
    StoredSubscription, SCHEMA_VERSION,
};

fn publish(topic: &str, payload: &'static [u8]) -> StoredPublish {
    StoredPublish {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: 1,
        retain: false,
    }
}

fn message(topic: &str, received_at_ms: u64) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: Bytes::from(topic.as_bytes().to_vec()),
        qos: 1,
        retain: true,
        received_at_ms,
    }
}

fn sub(filter: &str, qos: u8, routes: &[&str]) -> StoredSubscription {
    StoredSubscription {
        filter: filter.into(),
        qos,
        routes: routes.iter().map(|r| r.to_string()).collect(),
    }
}

const LIMIT: HeldLimit = HeldLimit {
    max_per_route: 3,
    max_age: Duration::from_secs(60),
};

fn publish_qos(topic: &str, qos: u8) -> StoredPublish {
    StoredPublish {
        qos,
        ..publish(topic, b"p")
    }
}

#[test]
fn a_group_of_qos1_publishes_is_one_batch_removed_with_its_last_entry_and_qos2_keeps_its_own_keys()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // 70 QoS 1 (a batch of 64, then one of 6), a QoS 2, two QoS 1.
    let mut group: Vec<StoredPublish> = (0..70).map(|i| publish_qos(&format!("a{i}"), 1)).collect();
    group.push(publish_qos("two", 2));
    group.push(publish_qos("b0", 1));
    group.push(publish_qos("b1", 1));
    {
        let store = Store::open(&path).unwrap();
        let seqs = store.outbox_push_many("s", &group).unwrap();
        assert_eq!(seqs, (0..73).collect::<Vec<u64>>(), "one number per entry");
        let loaded = store.outbox_load("s").unwrap();
        let expect: Vec<(u64, StoredPublish)> = (0..73).zip(group.iter().cloned()).collect();
        assert_eq!(loaded, expect);
        // Every entry of the first batch but its last: the rest stay loadable.
        for seq in 0..63 {
            assert!(store.outbox_remove("s", seq).unwrap(), "entry {seq}");
        }
        assert!(!store.outbox_remove("s", 5).unwrap(), "removed already");
        assert_eq!(store.outbox_len("s").unwrap(), 10);
        assert_eq!(store.outbox_load("s").unwrap()[0], (63, group[63].clone()));
        assert!(store.outbox_remove("s", 63).unwrap());
        assert!(store.outbox_remove("s", 70).unwrap(), "the QoS 2 entry");
        // Half of the second batch: after a reopen it comes back whole (at least once).
        for seq in 64..67 {
            assert!(store.outbox_remove("s", seq).unwrap());
        }
        assert!(!store.outbox_remove("s", 80).unwrap(), "never pushed");
    }
    let store = Store::open(&path).unwrap();
    let loaded: Vec<u64> = store
        .outbox_load("s")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(loaded, vec![64, 65, 66, 67, 68, 69, 71, 72]);
    // Numbering goes on after the last entry of the last batch.
    assert_eq!(store.outbox_push("s", &publish_qos("c", 1)).unwrap(), 73);
    // Removing the batch's entries one by one removes it, also without a load first.
    drop(store);
    let store = Store::open(&path).unwrap();
    for seq in [65, 64, 66, 67, 68, 69, 71, 72, 73] {
        assert!(store.outbox_remove("s", seq).unwrap(), "entry {seq}");
    }
    assert_eq!(store.outbox_load("s").unwrap(), vec![]);
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.outbox_load("s").unwrap(),
        vec![],
        "nothing left on disk"
    );
}

#[test]
fn outbox_keeps_order_and_continues_its_sequence_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.outbox_push("s1", &publish("a", b"1")).unwrap(), 0);
        assert_eq!(
            store.outbox_push("s1", &publish("b", &[0, 255])).unwrap(),
            1
        );
        assert_eq!(store.outbox_push("s1", &publish("c", b"")).unwrap(), 2);
        assert_eq!(
            store.outbox_push("s10", &publish("other", b"x")).unwrap(),
            0
        );
        assert!(store.outbox_remove("s1", 0).unwrap());
        assert!(!store.outbox_remove("s1", 0).unwrap());
        // A removed number is never handed out again while the store is open.
        assert!(store.outbox_remove("s1", 2).unwrap());
        assert_eq!(store.outbox_push("s1", &publish("d", b"4")).unwrap(), 3);
    }
    let store = Store::open(&path).unwrap();
    let loaded = store.outbox_load("s1").unwrap();
    assert_eq!(
        loaded,
        vec![(1, publish("b", &[0, 255])), (3, publish("d", b"4"))]
    );
    assert_eq!(store.outbox_len("s1").unwrap(), 2);
    assert_eq!(store.outbox_len("s10").unwrap(), 1);
    assert_eq!(store.outbox_push("s1", &publish("e", b"5")).unwrap(), 4);
}

#[test]
fn outbox_group_commit_stores_all_in_order() {
    let store = Store::memory().unwrap();
    let batch: Vec<_> = (0..100).map(|i| publish(&format!("t/{i}"), b"p")).collect();
    let seqs = store.outbox_push_many("s", &batch).unwrap();
    assert_eq!(seqs, (0..100).collect::<Vec<u64>>());
    let loaded = store.outbox_load("s").unwrap();
    assert_eq!(
        loaded.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        batch
    );
    assert_eq!(store.outbox_push_many("s", &[]).unwrap(), Vec::<u64>::new());
}

#[test]
fn subscriptions_save_replaces_the_sessions_set() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .subscriptions_save("s", &[sub("a/#", 1, &["r1"]), sub("b/+", 2, &[])])
            .unwrap();
        store
            .subscriptions_save("t", &[sub("x", 0, &["r2", "r3"])])
            .unwrap();
        store
            .subscriptions_save("s", &[sub("b/+", 0, &["r4"]), sub("c", 1, &[])])
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.subscriptions_load("s").unwrap(),
        vec![sub("b/+", 0, &["r4"]), sub("c", 1, &[])]
    );
    assert_eq!(
        store.subscriptions_load("t").unwrap(),
        vec![sub("x", 0, &["r2", "r3"])]
    );
    store.subscriptions_save("t", &[]).unwrap();
    assert!(store.subscriptions_load("t").unwrap().is_empty());
    assert!(matches!(
        store.subscriptions_save("s", &[sub("a", 3, &[])]),
        Err(StoreError::InvalidQos(3))
    ));
    assert_eq!(
        store.subscriptions_load("s").unwrap().len(),
        2,
        "a refused save changes nothing"
    );
}

#[test]
fn session_meta_round_trips() {
    let store = Store::memory().unwrap();
    assert_eq!(store.session_meta_get("s").unwrap(), None);
    let meta = SessionMeta {
        client_id: "client-1".into(),
        last_connected_ms: Some(1_700_000_000_000),
        last_disconnected_ms: None,
    };
    store.session_meta_put("s", &meta).unwrap();
    assert_eq!(store.session_meta_get("s").unwrap(), Some(meta.clone()));
    assert_eq!(
        store.session_meta_list().unwrap(),
        vec![("s".to_owned(), meta)]
    );
    assert_eq!(store.path(), None);
}

#[test]
fn held_messages_are_bounded_expire_and_are_taken_once() {
    let store = Store::memory().unwrap();
    let now = 1_000_000;
    assert_eq!(
        store
            .held_push("s", "r", &message("old", now - 120_000), LIMIT, now)
            .unwrap(),
        HeldPush::Stored(0)
    );
    assert_eq!(
        store
            .held_push("s", "r", &message("m1", now), LIMIT, now)
            .unwrap(),
        HeldPush::Stored(1)
    );
    assert_eq!(
        store
            .held_push("s", "r", &message("m2", now), LIMIT, now)
            .unwrap(),
        HeldPush::Stored(2)
    );
    // Full, but the expired one makes room.
    assert_eq!(
        store
            .held_push("s", "r", &message("m3", now), LIMIT, now)
            .unwrap(),
        HeldPush::Stored(3)
    );
    assert_eq!(
        store
            .held_push("s", "r", &message("m4", now), LIMIT, now)
            .unwrap(),
        HeldPush::Full
    );
    assert_eq!(
        store
            .held_push("s", "other", &message("o", now), LIMIT, now)
            .unwrap(),
        HeldPush::Stored(0)
    );
    assert_eq!(store.held_count("s").unwrap(), 4);

    // Later, m1 has expired: take counts it and returns the rest in order.
    let taken = store
        .held_take("s", "r", now + 61_000, Duration::from_secs(61))
        .unwrap();
    assert_eq!(taken.expired, 0);
    assert_eq!(
        taken.messages,
        vec![message("m1", now), message("m2", now), message("m3", now)]
    );
    assert_eq!(store.held_count("s").unwrap(), 1);
    assert!(store
        .held_take("s", "r", now, LIMIT.max_age)
        .unwrap()
        .messages
        .is_empty());

    let _ = store
        .held_push("s", "r", &message("a", now), LIMIT, now)
        .unwrap();
    let taken = store
        .held_take("s", "r", now + 60_001, LIMIT.max_age)
        .unwrap();
    assert_eq!((taken.messages.len(), taken.expired), (0, 1));
}

#[test]
fn delete_session_state_touches_only_that_session() {
    let store = Store::memory().unwrap();
    let meta = SessionMeta {
        client_id: "c".into(),
        ..SessionMeta::default()
    };
    for s in ["s", "s2", "t"] {
        store.outbox_push(s, &publish("a", b"1")).unwrap();
        store
            .subscriptions_save(s, &[sub("a/#", 1, &["r"])])
            .unwrap();
        let _ = store.held_push(s, "r", &message("m", 0), LIMIT, 0).unwrap();
        store.session_meta_put(s, &meta).unwrap();
    }
    store.delete_session_state("s", true).unwrap();
    assert_eq!(store.outbox_len("s").unwrap(), 0);
    assert!(store.subscriptions_load("s").unwrap().is_empty());
    assert_eq!(store.held_count("s").unwrap(), 0);
    assert_eq!(store.session_meta_get("s").unwrap(), Some(meta.clone()));
    for other in ["s2", "t"] {
        assert_eq!(store.outbox_len(other).unwrap(), 1);
        assert_eq!(store.subscriptions_load(other).unwrap().len(), 1);
        assert_eq!(store.held_count(other).unwrap(), 1);
    }
    store.delete_session_state("t", false).unwrap();
    assert_eq!(store.session_meta_get("t").unwrap(), None);
    assert_eq!(store.session_meta_get("s2").unwrap(), Some(meta));
    // Sequence numbers start afresh for a deleted session.
    assert_eq!(store.outbox_push("t", &publish("a", b"1")).unwrap(), 0);
}

#[test]
fn names_that_cannot_be_keys_are_refused() {
    let store = Store::memory().unwrap();
    assert!(matches!(
        store.outbox_push("", &publish("a", b"")),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(matches!(
        store.held_count("a\0b"),
        Err(StoreError::InvalidName { .. })
    ));
    let err = store
        .held_push("s", "r\0", &message("m", 0), LIMIT, 0)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidName { what: "route", .. }),
        "{err}"
    );
}

/// Builds a schema-version-1 store with raw sled calls, exactly as version 1 wrote it.
fn write_v1_layout(path: &Path) {
    let db = raw_db(path);
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
    meta.insert(
        [&b"migration/"[..], &1u32.to_be_bytes()].concat(),
        "initial",
    )
    .unwrap();
    let json = |s: &str| [&[1u8][..], s.as_bytes()].concat();
    let sessions = db.open_tree("sessions").unwrap();
    sessions
        .insert(
            "plant-1",
            json(r#"{"client_id":"c1","last_connected_ms":1000,"last_disconnected_ms":null}"#),
        )
        .unwrap();
    let subs = db.open_tree("subscriptions").unwrap();
    subs.insert(
        "plant-1\0sensors/#",
        json(r#"{"qos":1,"routes":["durable-a"]}"#),
    )
    .unwrap();
    let outbox = db.open_tree("outbox").unwrap();
    let key = |seq: u64| [&b"plant-1\0"[..], &seq.to_be_bytes()].concat();
    outbox
        .insert(
            key(5),
            json(r#"{"topic":"a/b","payload":[104,105],"qos":1,"retain":false}"#),
        )
        .unwrap();
    outbox
        .insert(
            key(7),
            json(r#"{"topic":"c","payload":[],"qos":2,"retain":true}"#),
        )
        .unwrap();
    db.flush().unwrap();
}

#[test]
fn a_version_1_store_is_upgraded_in_place_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    write_v1_layout(dir.path());

    let store = open_after_raw(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        store.session_meta_get("plant-1").unwrap(),
        Some(SessionMeta {
            client_id: "c1".into(),
            last_connected_ms: Some(1000),
            last_disconnected_ms: None
        })
    );
    assert_eq!(
        store.subscriptions_load("plant-1").unwrap(),
        vec![sub("sensors/#", 1, &["durable-a"])]
    );
    let c = StoredPublish {
        topic: "c".into(),
        payload: Bytes::new(),
        qos: 2,
        retain: true,
    };
    assert_eq!(
        store.outbox_load("plant-1").unwrap(),
        vec![(5, publish("a/b", b"hi")), (7, c)]
    );
    assert_eq!(store.outbox_push("plant-1", &publish("d", b"")).unwrap(), 8);
    assert_eq!(
        store
            .held_push("plant-1", "r", &message("m", 0), LIMIT, 0)
            .unwrap(),
        HeldPush::Stored(0)
    );
    drop(store);

    // On disk, the outbox values are binary frames now.
    let db = raw_db(dir.path());
    let outbox = db.open_tree("outbox").unwrap();
    assert!(outbox.iter().values().all(|v| v.unwrap()[0] == 2));
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap().as_ref(),
        SCHEMA_VERSION.to_be_bytes()
    );
    assert!(meta.get("migrating_to").unwrap().is_none());
    // Migration 3 created the session-state trees, empty.
    let names: Vec<Vec<u8>> = db.tree_names().iter().map(|n| n.to_vec()).collect();
    for tree in ["outbox_ids", "inbound"] {
        assert!(
            names.contains(&tree.as_bytes().to_vec()),
            "tree {tree} missing"
        );
        assert!(db.open_tree(tree).unwrap().is_empty());
    }
    assert_eq!(
        meta.get([&b"migration/"[..], &3u32.to_be_bytes()].concat())
            .unwrap()
            .unwrap()
            .as_ref(),
        b"session_state"
    );
}

fn raw_meta(path: &Path, key: &str, value: u32) {
    let db = raw_db(path);
    db.open_tree("meta")
        .unwrap()
        .insert(key, &value.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
}

#[test]
fn a_store_from_a_newer_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    raw_meta(dir.path(), "schema_version", 999);
    let err = open_after_raw(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerVersion {
                found: 999,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("999") && text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
    assert!(
        text.starts_with(&format!("store {}: ", dir.path().display())),
        "{text}"
    );
}

#[test]
fn an_unknown_applied_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    raw_meta(dir.path(), "schema_version", 0);
    let err = open_after_raw(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownVersion { version: 0, .. }),
        "{err}"
    );
}

#[test]
fn an_interrupted_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_v1_layout(dir.path());
    raw_meta(dir.path(), "migrating_to", 2);
    let err = open_after_raw(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::DirtyMigration { version: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("migration to schema version 2 did not complete"),
        "{err}"
    );
}

#[test]
fn a_sled_database_of_someone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = raw_db(dir.path());
    db.insert("key", "value").unwrap();
    db.flush().unwrap();
    drop(db);
    let err = open_after_raw(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_directory_of_garbage_is_an_error_not_a_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut garbage = |n: usize| (0..n).map(|_| rng.u8(..)).collect::<Vec<u8>>();
    let layouts: [&[(&str, usize)]; 3] = [
        &[("db", 4096), ("conf", 64), ("blobs", 100)],
        &[("conf", 200)],
        &[("db", 1 << 20)],
    ];
    for layout in layouts {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in layout {
            std::fs::write(dir.path().join(name), garbage(*len)).unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{layout:?}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("store {}: corrupt: ", dir.path().display())),
            "{err}"
        );
    }
}

#[test]
fn a_store_whose_log_was_overwritten_is_refused_not_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.outbox_push("s", &publish("a", b"1")).unwrap();
    drop(store);
    let mut rng = fastrand::Rng::with_seed(11);
    std::fs::write(
        dir.path().join("db"),
        (0..1 << 20).map(|_| rng.u8(..)).collect::<Vec<u8>>(),
    )
    .unwrap();
    // sled drops a log that fails its checksums and would start empty; the store notices
    // that its schema version went missing.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn store_directory_and_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("a/b");
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in [fresh, existing] {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", path.display());
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let want = if entry.file_type().unwrap().is_dir() {
                0o700
            } else {
                0o600
            };
            assert_eq!(mode, want, "{}", entry.path().display());
        }
    }
}

const CHILD_ENV: &str = "MQTT_SESSIONS_STORE_TEST_CHILD_DIR";

/// Child mode of `a_second_process_gets_in_use`, which runs it with `--ignored` and
/// [`CHILD_ENV`] set; run by hand, it fails instead of passing without doing anything.
#[test]
#[ignore = "a child process of a_second_process_gets_in_use, run by it"]
fn child_process_opens_a_store_in_use() {
    let dir = std::env::var_os(CHILD_ENV)
        .unwrap_or_else(|| panic!("run by a_second_process_gets_in_use with {CHILD_ENV} set"));
    let err = Store::open(Path::new(&dir)).unwrap_err();
    println!("child error: {err}");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}

#[test]
fn a_second_process_gets_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_opens_a_store_in_use",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let want = format!(
        "child error: store {}: in use by another process",
        dir.path().display()
    );
    assert!(stdout.contains(&want), "{stdout}");
    drop(store);
    // Released once the holder closes it.
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_second_open_in_the_same_process_gets_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    drop(store);
}

/// sled's background threads let go of a directory's lock shortly after its last handle
/// is dropped. `Store::open` waits for a store this process closed; a raw sled handle in
/// these tests is not one, so opens after one wait here (for a lock nobody else holds).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Opens `path` with sled itself, waiting for an earlier handle to let go of it.
fn raw_db(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return db,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {} with sled: {e}", path.display()),
        }
    }
}

/// `Store::open` after a raw sled handle was dropped.
fn open_after_raw(path: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Store::open(path) {
            Err(StoreError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
