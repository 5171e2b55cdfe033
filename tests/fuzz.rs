//! Fuzz harnesses (proptest-driven, time-boxed): topic and filter parsing against an
//! independent reference, the store codec through corrupted and truncated store values
//! and files. (The daemon's TOML config has its harness in `daemon/tests/fuzz_config.rs`.)
//!
//! In the normal suite each harness runs a few hundred cases. `scripts/fuzz [SECONDS]`
//! runs each for SECONDS (`MQTT_SESSIONS_FUZZ_SECS`), one after the other, and prints the
//! number of cases; a failure prints the shrunk input. Why not `cargo fuzz`: see
//! `docs/RELIABILITY.md` ("Fuzzing").
#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "harnesses fail loudly and report their case counts"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{fuzz, fuzz_reaching, tally};
use mqtt_sessions::store::{
    HeldLimit, SessionMeta, Store, StoredMessage, StoredPublish, StoredSubscription,
};
use mqtt_sessions::topic::{self, TopicFilter};
use proptest::prelude::*;

// ---- topics and filters ----

/// Strings over the characters that matter to MQTT topics, plus a few words.
fn topicish() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a", "b", "/", "/", "+", "#", "$", "\0", "é", " ", "$share", "$SYS", "share", "g",
    ]);
    prop_oneof![
        8 => prop::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        1 => (65_530usize..65_540).prop_map(|n| "a".repeat(n)),
        1 => any::<String>(),
    ]
}

/// The common rules [MQTT-4.7.3-1..3].
fn reference_common(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains('\0')
}

fn reference_shared(s: &str) -> bool {
    s == "$share" || s.starts_with("$share/")
}

/// Topic name rules, written independently of the crate.
fn reference_valid_name(t: &str) -> bool {
    reference_common(t) && !t.contains(['+', '#']) && !reference_shared(t)
}

/// Filter levels: `+` alone in its level, `#` alone in the last level.
fn reference_levels(f: &str) -> bool {
    let levels: Vec<&str> = f.split('/').collect();
    levels
        .iter()
        .enumerate()
        .all(|(i, l)| *l == "+" || (*l == "#" && i == levels.len() - 1) || !l.contains(['+', '#']))
}

/// Topic filter rules, with `$share/{group}/{filter}` [MQTT-4.8.2-1, 4.8.2-2].
fn reference_valid_filter(f: &str) -> bool {
    if !reference_common(f) {
        return false;
    }
    if reference_shared(f) {
        let Some(rest) = f.strip_prefix("$share/") else {
            return false;
        };
        let Some((group, filter)) = rest.split_once('/') else {
            return false;
        };
        return !group.is_empty()
            && !group.contains(['+', '#'])
            && !filter.is_empty()
            && reference_levels(filter);
    }
    reference_levels(f)
}

/// Matching, level by level, recursively [MQTT-4.7.1, 4.7.2-1].
fn reference_matches(filter: &[&str], topic: &[&str], first: bool) -> bool {
    match (filter.first(), topic.first()) {
        (Some(&"#"), Some(t)) if first && t.starts_with('$') => false,
        (Some(&"#"), _) => true,
        (Some(&"+"), Some(t)) if first && t.starts_with('$') => false,
        (Some(&"+"), Some(_)) => reference_matches(&filter[1..], &topic[1..], false),
        (Some(f), Some(t)) if f == t => reference_matches(&filter[1..], &topic[1..], false),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn fuzz_topic_and_filter_parsing_agrees_with_an_independent_reference() {
    fuzz("topic", (topicish(), topicish()), |(f, t)| {
        let name_ok = topic::validate_topic_name(&t).is_ok();
        prop_assert_eq!(name_ok, reference_valid_name(&t), "topic name {:?}", t);
        let parsed = TopicFilter::new(f.clone());
        prop_assert_eq!(
            parsed.is_ok(),
            reference_valid_filter(&f),
            "filter {:?}: {:?}",
            f,
            parsed
        );
        // The free matcher never panics, whatever it is given.
        let _ = topic::matches(&f, &t);
        if let (Ok(filter), true) = (parsed, name_ok) {
            let plain = filter.match_filter().to_string();
            let fl: Vec<&str> = plain.split('/').collect();
            let tl: Vec<&str> = t.split('/').collect();
            prop_assert_eq!(
                filter.matches(&t),
                reference_matches(&fl, &tl, true),
                "{:?} on {:?}",
                f,
                t
            );
            prop_assert_eq!(filter.as_str(), f.as_str());
        }
        Ok(())
    });
}

// ---- the store codec, through corrupted store values and files ----

#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the value to this fraction of its length.
    Truncate(f64),
    /// XOR the byte at this fraction of the length.
    Flip(f64, u8),
    /// Replace the value.
    Replace(Vec<u8>),
    /// Append bytes.
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, 1..=255u8).prop_map(|(at, x)| Mutation::Flip(at, x)),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Mutation::Replace),
        prop::collection::vec(any::<u8>(), 1..10).prop_map(Mutation::Append),
    ]
}

fn apply(m: &Mutation, v: &[u8]) -> Vec<u8> {
    let at = |f: f64| ((v.len() as f64) * f) as usize;
    match m {
        Mutation::Truncate(f) => v[..at(*f)].to_vec(),
        Mutation::Flip(f, x) => {
            let mut out = v.to_vec();
            if !out.is_empty() {
                let i = at(*f).min(out.len() - 1);
                out[i] ^= x;
            }
            out
        }
        Mutation::Replace(b) => b.clone(),
        Mutation::Append(b) => [v, b].concat(),
    }
}

/// A store with some of everything: outbox entries, subscriptions, session metadata,
/// held messages.
fn populate(dir: &Path) {
    let store = Store::open(dir).unwrap();
    for i in 0..3u8 {
        store
            .outbox_push(
                "s",
                &StoredPublish {
                    topic: format!("out/{i}"),
                    payload: Bytes::from(vec![i; usize::from(i) * 7]),
                    qos: i % 3,
                    retain: i == 1,
                },
            )
            .unwrap();
    }
    store
        .subscriptions_save(
            "s",
            &[StoredSubscription {
                filter: "a/+/#".into(),
                qos: 1,
                routes: vec!["orders".into()],
            }],
        )
        .unwrap();
    store
        .session_meta_put(
            "s",
            &SessionMeta {
                client_id: "cid".into(),
                last_connected_ms: Some(1),
                last_disconnected_ms: None,
            },
        )
        .unwrap();
    let limit = HeldLimit {
        max_per_route: 10,
        max_age: Duration::from_secs(3600),
    };
    let _ = store
        .held_push(
            "s",
            "orders",
            &StoredMessage {
                topic: "in/x".into(),
                payload: Bytes::from_static(b"held"),
                qos: 1,
                retain: false,
                received_at_ms: 5,
            },
            limit,
            10,
        )
        .unwrap();
    store.flush().unwrap();
}

/// Opens the sled database of a store just dropped: its file lock is released once the
/// store's worker and sled's flusher let go of it, shortly after the drop.
fn sled_open(dir: &Path) -> sled::Db {
    let mut db = None;
    let opened = common::poll_until(Duration::from_secs(10), || {
        db = sled::open(dir).ok();
        db.is_some()
    });
    assert!(opened, "{} still locked", dir.display());
    db.unwrap()
}

/// [`Store::open`], waiting out the lock of a store just dropped (see [`sled_open`]).
fn store_open(dir: &Path) -> Result<Store, mqtt_sessions::store::StoreError> {
    let mut last = None;
    common::poll_until(Duration::from_secs(10), || {
        last = Some(Store::open(dir));
        !matches!(
            last,
            Some(Err(mqtt_sessions::store::StoreError::InUse { .. }))
        )
    });
    last.unwrap()
}

/// Reads everything back through the public API: each call may fail with a typed
/// error, none may panic.
fn read_back(dir: &Path) -> Result<(), String> {
    let store = match store_open(dir) {
        Ok(s) => s,
        Err(e) => {
            tally("open_err");
            return Err(e.to_string());
        }
    };
    let count = |what: &str, ok: bool| tally(&format!("{what}_{}", if ok { "ok" } else { "err" }));
    count("schema_version", store.schema_version().is_ok());
    match store.outbox_load("s") {
        Ok(v) => count("outbox_load", v.len() == 3),
        Err(_) => count("outbox_load", false),
    }
    let _ = store.outbox_len("s");
    count("subscriptions_load", store.subscriptions_load("s").is_ok());
    count("session_meta_get", store.session_meta_get("s").is_ok());
    let _ = store.session_meta_list();
    count(
        "held_load",
        store
            .held_load("s", "orders", 10, Duration::from_secs(3600))
            .is_ok(),
    );
    // Writing after reading garbage works or fails cleanly too.
    let _ = store.outbox_push(
        "s",
        &StoredPublish {
            topic: "after".into(),
            payload: Bytes::new(),
            qos: 1,
            retain: false,
        },
    );
    Ok(())
}

/// How often each outcome of [`read_back`] must be reached by corrupted store values: every
/// typed error of opening and loading, and a successful load (so that not every input is
/// refused at the door). Measured shares at 256 cases: open 53 %, outbox 20 %,
/// subscriptions 11 %, session metadata 12 %, held messages 6 %, outbox loaded 27 %; each
/// bound is about a third of that.
const STORE_VALUES_REACH: &[(&str, f64)] = &[
    ("open_err", 0.15),
    ("outbox_load_err", 0.05),
    ("subscriptions_load_err", 0.03),
    ("session_meta_get_err", 0.03),
    ("held_load_err", 0.02),
    ("outbox_load_ok", 0.05),
];

/// How often each outcome of [`read_back`] must be reached by corrupted store files. A
/// damaged file fails the open (sled checks its pages) or, seldom, loads an outbox entry
/// that no longer decodes; the other loads' errors are reached through values
/// ([`STORE_VALUES_REACH`]). Measured at 256 cases: open 77 %, outbox 2.3 %, outbox loaded
/// 20 %.
const STORE_FILES_REACH: &[(&str, f64)] = &[
    ("open_err", 0.25),
    ("outbox_load_err", 0.005),
    ("outbox_load_ok", 0.05),
];

#[test]
fn fuzz_store_values_corrupted_or_truncated_load_as_typed_errors_never_panics() {
    let template = tempfile::tempdir().unwrap();
    populate(template.path());
    // Every (tree, key) of the populated store, to pick from.
    let keys: Vec<(Vec<u8>, Vec<u8>)> = {
        let db = sled_open(template.path());
        let mut keys = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            for kv in tree.iter() {
                keys.push((name.to_vec(), kv.unwrap().0.to_vec()));
            }
        }
        keys
    };
    assert!(keys.len() >= 6, "{} keys", keys.len());
    let n = keys.len();
    fuzz_reaching(
        "store-values",
        prop::collection::vec((0..n, mutation()), 1..4),
        STORE_VALUES_REACH,
        |muts| {
            let dir = tempfile::tempdir().unwrap();
            populate(dir.path());
            {
                let db = sled_open(dir.path());
                for (k, m) in &muts {
                    let (tree, key) = &keys[*k];
                    let tree = db.open_tree(tree).unwrap();
                    if let Some(v) = tree.get(key).unwrap() {
                        tree.insert(key.as_slice(), apply(m, &v)).unwrap();
                    }
                }
                db.flush().unwrap();
            }
            let _ = read_back(dir.path());
            Ok(())
        },
    );
}

#[test]
fn fuzz_store_files_corrupted_or_truncated_open_as_typed_errors_never_panics() {
    fuzz_reaching(
        "store-files",
        (0..8usize, mutation()),
        STORE_FILES_REACH,
        |(file, m)| {
            let dir = tempfile::tempdir().unwrap();
            populate(dir.path());
            let mut files: Vec<_> = walk(dir.path());
            files.sort();
            let path = &files[file % files.len()];
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, apply(&m, &bytes)).unwrap();
            let _ = read_back(dir.path());
            Ok(())
        },
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
