//! Micro-benchmarks of the store's outbox, per message: what a session with a store pays
//! for one QoS >= 1 publish on disk (a group commit of 64, then one removal each, as after
//! their PUBACKs), and how the removals could be written to sled.
//!
//! - `outbox/remove`: [`Store::outbox_push_many`] of 64 QoS 1 publishes (one outbox batch
//!   under one key since store schema version 4), then [`Store::outbox_remove`] of each
//!   (a sled removal of its packet id each, and of the batch's key with the last entry;
//!   before the batches: a key and a removal per entry, 9.4 µs per message at `ba13c6d`);
//! - `outbox/remove-entry`: the same, removing the entry only (what a session does when
//!   no packet id of it can be on disk: one sled removal for the whole batch);
//! - `sled/one-by-one` and `sled/batch`: the two removals of each entry on plain sled
//!   trees keyed like the store's, one `remove` each or one `sled::Batch` per tree.
//!
//! `cargo bench --features bench-internals --bench store` (criterion). Throughput is
//! messages: criterion's time per element is the cost of one publish's insert and removal.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mqtt_sessions::bench_internals::outbox_remove_entry;
use mqtt_sessions::store::{Store, StoredPublish};

/// Publishes per group commit.
const BATCH: usize = 64;

fn publishes() -> Vec<StoredPublish> {
    (0..BATCH)
        .map(|i| StoredPublish {
            topic: format!("out/in/bench/{i}"),
            payload: Bytes::from(vec![7u8; 64]),
            qos: 1,
            retain: false,
        })
        .collect()
}

fn key(seq: u64) -> Vec<u8> {
    let mut k = b"session\0".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn outbox(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    let batch = publishes();
    for entry_only in [false, true] {
        let store = Store::memory().expect("store");
        let name = if entry_only { "remove-entry" } else { "remove" };
        g.bench_function(name, |b| {
            b.iter(|| {
                let seqs = store.outbox_push_many("s", &batch).expect("push");
                for seq in seqs {
                    if entry_only {
                        outbox_remove_entry(&store, "s", seq).expect("remove");
                    } else {
                        store.outbox_remove("s", seq).expect("remove");
                    }
                }
            });
        });
    }
    g.finish();
}

fn sled_removals(c: &mut Criterion) {
    let mut g = c.benchmark_group("sled");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    let value = vec![7u8; 96];
    for batched in [false, true] {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let entries = db.open_tree("outbox").expect("tree");
        let ids = db.open_tree("outbox_ids").expect("tree");
        let mut next = 0u64;
        let name = if batched { "batch" } else { "one-by-one" };
        g.bench_function(name, |b| {
            b.iter(|| {
                let first = next;
                next += BATCH as u64;
                let mut push = sled::Batch::default();
                for seq in first..next {
                    push.insert(key(seq), value.clone());
                }
                entries.apply_batch(push).expect("insert");
                db.flush().expect("flush");
                if batched {
                    let mut a = sled::Batch::default();
                    let mut e = sled::Batch::default();
                    for seq in first..next {
                        a.remove(key(seq));
                        e.remove(key(seq));
                    }
                    ids.apply_batch(a).expect("remove");
                    entries.apply_batch(e).expect("remove");
                } else {
                    for seq in first..next {
                        ids.remove(key(seq)).expect("remove");
                        entries.remove(key(seq)).expect("remove");
                    }
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, outbox, sled_removals);
criterion_main!(benches);
