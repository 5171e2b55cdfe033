//! Micro-benchmarks of the incoming-message hot path, per message:
//!
//! - `match/trie/N`: [`FilterTrie::for_each_match`] over N routes;
//! - `match/linear/N`: the naive alternative, [`TopicFilter::matches`] on every route
//!   (10 and 1,000 routes only: at 100,000 it is hopeless);
//! - `dispatch/N`: [`RouteTable::dispatch`] with N listen-style routes (a bounded flume
//!   queue each), the consumers' queues drained outside the timed part;
//! - `receive/N`: what the driver does per PUBLISH: build the [`Message`] (topic copied
//!   into an `Arc<str>`, payload shared, receive time) and dispatch it;
//! - `change/N`: what the router does per route added to N routes: one insert into its
//!   table and a copy of the table to publish to the sessions (the nodes are shared, so
//!   the copy costs the width of the changed path, not N). Not per message.
//!
//! Routes are realistic filters, two per site: `site/{n}/+/temp` and `site/{n}/#`; each
//! message goes to `site/{k}/dev{d}/temp` for a random site `k`, so matches two routes.
//!
//! `cargo bench --features bench-internals --bench matching` (criterion; add `-- dispatch`
//! to run a subset). The feature exposes the internals measured here.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqtt_sessions::bench_internals::{FilterTrie, RouteEntry, RouteTable, Target};
use mqtt_sessions::router::route::{RouteScope, RouteStats};
use mqtt_sessions::{Message, Overflow, QoS, TopicFilter};

/// Route counts benchmarked.
const SIZES: [usize; 3] = [10, 1_000, 100_000];
/// Distinct topics cycled through (random sites).
const TOPICS: usize = 4096;
/// Messages dispatched between two drains of the route queues.
const BATCH: u64 = 512;

/// The filters of `n` routes.
fn filters(n: usize) -> Vec<TopicFilter> {
    (0..n)
        .map(|i| {
            let site = i / 2;
            let f = if i % 2 == 0 {
                format!("site/{site}/+/temp")
            } else {
                format!("site/{site}/#")
            };
            TopicFilter::new(f).expect("valid filter")
        })
        .collect()
}

/// `(site, topic)` pairs: random sites among the `n / 2` that have routes.
fn topics(n: usize) -> Vec<(usize, String)> {
    let mut rng = fastrand::Rng::with_seed(7);
    let sites = (n / 2).max(1);
    (0..TOPICS)
        .map(|_| {
            let site = rng.usize(..sites);
            (site, format!("site/{site}/dev{}/temp", rng.u32(..1000)))
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let fs = filters(n);
        let topics = topics(n);
        let mut trie = FilterTrie::new();
        for (i, f) in fs.iter().enumerate() {
            trie.insert(f, i);
        }
        g.bench_with_input(BenchmarkId::new("trie", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let (_, topic) = &topics[i % TOPICS];
                i += 1;
                let mut found = 0usize;
                trie.for_each_match(black_box(topic), |v| found += *v);
                found
            });
        });
        if n <= 1_000 {
            let linear: Vec<(TopicFilter, usize)> = fs.into_iter().zip(0..).collect();
            g.bench_with_input(BenchmarkId::new("linear", n), &n, |b, _| {
                let mut i = 0;
                b.iter(|| {
                    let (_, topic) = &topics[i % TOPICS];
                    i += 1;
                    let topic = black_box(topic.as_str());
                    linear
                        .iter()
                        .filter(|(f, _)| f.matches(topic))
                        .map(|(_, v)| *v)
                        .sum::<usize>()
                });
            });
        }
    }
    g.finish();
}

/// A route table of `n` listen-style routes (all sessions, QoS 1) and their receivers.
fn table(n: usize) -> (RouteTable, Vec<flume::Receiver<Message>>) {
    let mut trie = FilterTrie::new();
    let mut rxs = Vec::with_capacity(n);
    for (i, filter) in filters(n).into_iter().enumerate() {
        let (tx, rx) = flume::bounded(BATCH as usize);
        rxs.push(rx);
        let entry = RouteEntry {
            id: i as u64,
            name: Arc::from(format!("listen-{i}")),
            filter: filter.clone(),
            scope: RouteScope::AllSessions,
            qos: QoS::AtLeastOnce,
            subscribe: Default::default(),
            overflow: Overflow::DropNewest,
            target: Target::Queue { tx, oldest: None },
            named: false,
            stats: Arc::new(RouteStats::default()),
        };
        trie.insert(&filter, Arc::new(entry));
    }
    (RouteTable { trie }, rxs)
}

fn message(session: &Arc<str>, topic: &str, payload: &Bytes) -> Message {
    let mut m = Message::new(session, topic, payload.clone());
    m.qos = QoS::AtLeastOnce;
    m.packet_id = 1;
    m
}

/// Times `per_message(i)` for `iters` messages, draining the two routes each message
/// went to between batches (untimed).
fn timed_batches(
    iters: u64,
    topics: &[(usize, String)],
    rxs: &[flume::Receiver<Message>],
    mut per_message: impl FnMut(usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let batch = (iters - done).min(BATCH);
        let start = Instant::now();
        for j in done..done + batch {
            per_message(j as usize % TOPICS);
        }
        total += start.elapsed();
        for j in done..done + batch {
            let site = topics[j as usize % TOPICS].0;
            for rx in &rxs[2 * site..(2 * site + 2).min(rxs.len())] {
                while rx.try_recv().is_ok() {}
            }
        }
        done += batch;
    }
    total
}

fn dispatch(c: &mut Criterion) {
    let session: Arc<str> = Arc::from("plant-1");
    let payload = Bytes::from(vec![0u8; 64]);
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (table, rxs) = table(n);
        let topics = topics(n);
        let msgs: Vec<Message> = topics
            .iter()
            .map(|(_, t)| message(&session, t, &payload))
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                timed_batches(iters, &topics, &rxs, |i| {
                    assert!(table.dispatch(&session, black_box(&msgs[i])).is_none());
                })
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("receive");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (table, rxs) = table(n);
        let topics = topics(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                timed_batches(iters, &topics, &rxs, |i| {
                    let msg = message(&session, black_box(&topics[i].1), &payload);
                    assert!(table.dispatch(&session, &msg).is_none());
                })
            });
        });
    }
    g.finish();
}

fn change(c: &mut Criterion) {
    let mut g = c.benchmark_group("change");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let filters = filters(n);
        let mut trie = FilterTrie::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i);
        }
        let extra = TopicFilter::new("site/new/+/temp").expect("filter");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                trie.insert(&extra, n);
                // What `RouterActor::publish` stores for the sessions to read.
                let published = black_box(trie.clone());
                assert_eq!(trie.remove(&extra, |v| *v == n), [n]);
                published
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = matching, dispatch, change
}
criterion_main!(benches);
