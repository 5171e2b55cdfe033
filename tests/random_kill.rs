//! SIGKILL at random moments: a store-backed process with a persistent session publishes
//! QoS 2 and QoS 1 and consumes QoS 2 and QoS 1, and is SIGKILLed at uniformly random
//! times (a seeded random delay after it started, printed) — no drain, no frozen broker,
//! no forced flush — then restarted. After the last restart it runs to the end. Checked
//! at the broker (a persistent `mosquitto_sub -q 2` and the broker's log) and in the
//! consumer's record (a file the route appends to and fsyncs): nothing lost at QoS 1 or
//! QoS 2 either way; outgoing QoS 2 exactly once at the broker's subscriber with no packet
//! id reused at the broker; and every restarted process made progress. Duplicates are
//! counted, printed and recorded as figures: QoS 1 both ways (allowed); incoming QoS 2
//! handled again after a kill, which comes from the one crash window that remains (a
//! consumer finished, the process killed before the message's id is on disk:
//! `docs/ARCHITECTURE.md`, "Known gaps"); and incoming QoS 2 handled twice by one process
//! (see the comment where it is counted).
//!
//! The seed comes from `MQTT_SESSIONS_SEED` when set (to replay a run), else from the
//! clock; it is printed first and repeated in every failure message.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; the seed and the tallies are the test's report"
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use std::time::{Duration, Instant};

use common::*;
use mqtt_sessions::{Publish, QoS};

/// Deadline of every wait.
const T: Duration = Duration::from_secs(60);
/// The child process's environment variable (see [`child_process`]).
const CHILD: &str = "MQTT_SESSIONS_RANDOM_KILL_CHILD";
/// Client id of the child processes' persistent session.
const CLIENT: &str = "rk-app";
/// A process is killed this long after it was spawned, drawn uniformly (milliseconds):
/// from before its session is up (its start takes about 100 ms) to well into its stream.
const KILL_AFTER_MS: std::ops::Range<u64> = 50..1_500;

/// Child process entry (run by the tests below with [`CHILD`] set to `"gen{G} {dir}
/// {url}"`): one persistent session `app` on the store `{dir}/store`. A `handle` route
/// on `in/#` (QoS 2) appends `G {topic} {payload}` to `{dir}/handled.log` and fsyncs it
/// before returning (the consumer is finished once the line is on disk). A loop
/// publishes `G-k` (k = 0, 1, …) alternately at QoS 2 to `out/q2` and at QoS 1 to
/// `out/q1`, printing `accepted q2 G-k` / `accepted q1 G-k` once `enqueue` returned (in
/// the store's outbox), until the file `{dir}/quiet` exists; it then waits until its
/// outbox is empty, prints `drained` and idles until killed.
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    init_tracing();
    let StoreChild {
        generation,
        dir,
        manager: m,
        session: h,
        log: file,
    } = StoreChild::start(CHILD, CLIENT).await;
    let tag = generation.clone();
    let _route = m
        .route("in/#")
        .session("app")
        .qos(QoS::ExactlyOnce)
        .name("inbox")
        .handle(move |msg| {
            let mut f = file.lock().unwrap();
            let line = format!("{tag} {} {}\n", msg.topic, msg.payload_str().unwrap());
            f.write_all(line.as_bytes()).unwrap();
            f.sync_data().unwrap();
        })
        .await
        .unwrap();
    m.wait_for_session("app", T).await.unwrap();
    println!("started");
    let quiet = dir.join("quiet");
    for k in 0.. {
        if quiet.exists() {
            break;
        }
        let payload = format!("{generation}-{k}");
        let (topic, qos, tag) = if k % 2 == 0 {
            ("out/q2", QoS::ExactlyOnce, "q2")
        } else {
            ("out/q1", QoS::AtLeastOnce, "q1")
        };
        h.enqueue(Publish::new(topic, payload.clone()).qos(qos))
            .await
            .unwrap();
        println!("accepted {tag} {payload}");
        // Paces the stream (a few hundred publishes per second), so that a kill lands
        // mid-stream with publishes at every stage.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drained = poll_until_async(T, || {
        let n = h.metrics().pending_messages;
        async move { n == 0 }
    })
    .await;
    if drained {
        println!("drained");
    }
    std::future::pending::<()>().await;
}

/// How many times each item occurs.
fn tally<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    items.into_iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l).or_default() += 1;
        m
    })
}

/// The payloads of the lines `"{prefix} {payload}"`.
fn with_prefix<'a>(lines: impl IntoIterator<Item = &'a String>, prefix: &str) -> Vec<String> {
    let prefix = format!("{prefix} ");
    lines
        .into_iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// What one direction and QoS got: how many expected, lost (up to 20 shown) and
/// duplicated.
struct Tally {
    expected: usize,
    got: usize,
    lost: Vec<String>,
    duplicates: Vec<(String, usize)>,
}

impl Tally {
    fn of(expected: &[String], got: &[String]) -> Tally {
        let counts = tally(got.iter().cloned());
        Tally {
            expected: expected.len(),
            got: got.len(),
            lost: expected
                .iter()
                .filter(|p| !counts.contains_key(*p))
                .cloned()
                .collect(),
            duplicates: counts.into_iter().filter(|(_, n)| *n > 1).collect(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "expected": self.expected,
            "received": self.got,
            "lost": self.lost.len(),
            "duplicates": self.duplicates.iter().map(|(_, n)| n - 1).sum::<usize>(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} expected, {} received, {} lost {:?}, {} duplicated {:?}",
            self.expected,
            self.got,
            self.lost.len(),
            &self.lost[..self.lost.len().min(20)],
            self.duplicates.len(),
            &self.duplicates[..self.duplicates.len().min(20)]
        )
    }
}

/// The seed of this run: `MQTT_SESSIONS_SEED`, or else the clock.
fn seed() -> u64 {
    std::env::var("MQTT_SESSIONS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[actix_rt::test]
async fn a_store_backed_process_sigkilled_20_times_at_random_moments_loses_nothing_and_publishes_qos2_exactly_once(
) {
    killed_at_random_moments(20, "random-kill", false).await;
}

#[actix_rt::test]
#[ignore = "long variant (about 3 minutes), run by scripts/reliability"]
async fn a_store_backed_process_sigkilled_200_times_at_random_moments_loses_nothing_and_publishes_qos2_exactly_once(
) {
    killed_at_random_moments(200, "random-kill-long", false).await;
}

/// The same on MQTT 5 (over TCP the session polls its own connection there too, so the
/// outbox chooses, records and resumes packet ids and holds each PUBREL until its
/// `released` flag is on disk, as on MQTT 3.1.1).
#[actix_rt::test]
async fn an_mqtt5_store_backed_process_sigkilled_20_times_at_random_moments_loses_nothing_and_publishes_qos2_exactly_once(
) {
    killed_at_random_moments(20, "random-kill-mqtt5", true).await;
}

#[actix_rt::test]
#[ignore = "long variant (about 3 minutes), run by scripts/reliability"]
async fn an_mqtt5_store_backed_process_sigkilled_200_times_at_random_moments_loses_nothing_and_publishes_qos2_exactly_once(
) {
    killed_at_random_moments(200, "random-kill-mqtt5-long", true).await;
}

/// `kills` SIGKILLs at random moments (see the [module docs](self)), then a last process
/// that runs to the end; records the tallies as the figure `name`. With `mqtt5`, the
/// children's session speaks MQTT 5.
async fn killed_at_random_moments(kills: usize, name: &str, mqtt5: bool) {
    init_tracing();
    let seed = seed();
    println!("random-kill seed {seed} (replay with MQTT_SESSIONS_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let broker = Mosquitto::start();
    let watcher = Sub::options(broker.port(), "out/#")
        .qos(2)
        .persistent("rk-watcher")
        .spawn();
    let dir = tempfile::tempdir().unwrap();
    let handled_log = dir.path().join("handled.log");
    // `(generation, "topic payload")` of every line of the consumer's record.
    let handled_lines = || -> Vec<(String, String)> {
        std::fs::read_to_string(&handled_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(g, rest)| (g.to_string(), rest.to_string()))
            .collect()
    };
    let mut feeders = None;
    let mut accepted: Vec<String> = Vec::new();
    let mut delays = Vec::with_capacity(kills);
    let mut waited_for_progress = 0;
    for g in 0..=kills {
        let spawned = Instant::now();
        let spec = if mqtt5 {
            format!("gen{g}:5")
        } else {
            format!("gen{g}")
        };
        let mut child = ChildProc::spawn(CHILD, &spec, dir.path(), &broker.url());
        if g == 0 {
            assert!(
                child.wait_line("started", 1).await,
                "the first process did not start"
            );
            feeders = Some((
                Feeder::start(
                    broker.port(),
                    "in/q2",
                    2,
                    "rk-feed-q2",
                    Duration::from_millis(5),
                ),
                Feeder::start(
                    broker.port(),
                    "in/q1",
                    1,
                    "rk-feed-q1",
                    Duration::from_millis(5),
                ),
            ));
        }
        if g < kills {
            let delay = Duration::from_millis(rng.u64(KILL_AFTER_MS));
            delays.push(delay.as_millis() as u64);
            // The random moment of the kill: a deliberate wait, not synchronisation.
            tokio::time::sleep(delay.saturating_sub(spawned.elapsed())).await;
            // Every restart must make progress: a process killed before it accepted a
            // publish is killed as soon as it does (within the deadline), so that a
            // restart that cannot get going fails the test instead of being killed again.
            if child.lines_with("accepted ").is_empty() {
                waited_for_progress += 1;
                assert!(
                    child.wait_line("accepted ", 1).await,
                    "seed {seed}: generation {g} made no progress within {:?} (killed after \
                     {delay:?} was due); its warnings: {:?}",
                    Duration::from_secs(30),
                    child.lines_with("WARN")
                );
            }
            child.kill9();
            accepted.extend(child.lines_with("accepted "));
            continue;
        }
        // The last process runs to the end: the feeders stop (their last message is
        // `end`), the process handles everything, stops publishing and empties its outbox.
        assert!(
            child.wait_line("accepted ", 1).await,
            "seed {seed}: the last generation made no progress"
        );
        let (f2, f1) = feeders.take().unwrap();
        let (sent_q2, sent_q1) = (f2.finish().await, f1.finish().await);
        let all_in = poll_until_async(T, || {
            let lines = handled_lines();
            async move {
                lines.iter().any(|(_, l)| l == "in/q2 end")
                    && lines.iter().any(|(_, l)| l == "in/q1 end")
            }
        })
        .await;
        assert!(
            all_in,
            "seed {seed}: the feeders' last messages were never handled"
        );
        std::fs::write(dir.path().join("quiet"), b"").unwrap();
        assert!(
            child.wait_line("drained", 1).await,
            "seed {seed}: the last process's outbox never emptied"
        );
        accepted.extend(child.lines_with("accepted "));
        // Everything the process published is at the broker: a last message after it
        // reaches the watcher after every one of them.
        let port = broker.port();
        actix_rt::task::spawn_blocking(move || publish(port, "out/end", "end", 2, false))
            .await
            .unwrap();
        assert!(
            watcher.wait_for_line_async("out/end end", T).await,
            "seed {seed}: the end marker never reached the watcher"
        );
        child.kill9();

        let watched = watcher.lines();
        let handled_with_gen = handled_lines();
        let handled: Vec<String> = handled_with_gen.iter().map(|(_, l)| l.clone()).collect();
        // The same message handled twice by one process (each process has one connection
        // here): counted, not asserted — under heavy CPU load (three busy loops on two
        // cores) the code before and after the packet-id change both show some, each time
        // in a process that began by delivering what its durable route held before it
        // registered (docs/RELIABILITY.md); not yet explained.
        let twice_by_one_process: Vec<_> = tally(
            handled_with_gen
                .iter()
                .filter(|(_, l)| l.starts_with("in/q2 "))
                .cloned(),
        )
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
        let numbered = |n: u64| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let out_q2 = Tally::of(
            &with_prefix(&accepted, "q2"),
            &with_prefix(&watched, "out/q2"),
        );
        let out_q1 = Tally::of(
            &with_prefix(&accepted, "q1"),
            &with_prefix(&watched, "out/q1"),
        );
        let not_end = |v: Vec<String>| v.into_iter().filter(|p| p != "end").collect::<Vec<_>>();
        let in_q2 = Tally::of(&numbered(sent_q2), &not_end(with_prefix(&handled, "in/q2")));
        let in_q1 = Tally::of(&numbered(sent_q1), &not_end(with_prefix(&handled, "in/q1")));
        let log = broker.log();
        let reused = log.matches("Reused message ID").count();
        let resent_by_process = log
            .matches(&format!("Received PUBLISH from {CLIENT} (d1"))
            .count();
        // Every QoS 2 message at the watcher was released once; PUBRELs beyond that are
        // re-sends of a restarted process.
        let pubrel_resent = log
            .matches(&format!("Received PUBREL from {CLIENT}"))
            .count()
            .saturating_sub(out_q2.got);
        let resent_by_broker = log
            .matches(&format!("Sending PUBLISH to {CLIENT} (d1"))
            .count();
        let report = format!(
            "seed {seed}, {kills} kills (delays {} ms to {} ms; {waited_for_progress} waited \
             for the first progress)\n  out q2: {}\n  out q1: {}\n  in q2: {}\n  in q1: {}\n  \
             incoming QoS 2 handled twice by one process: {}; packet ids reused at the broker: \
             {reused}; re-sent with DUP 1: {resent_by_process} by the process (and \
             {pubrel_resent} PUBREL), {resent_by_broker} by the broker",
            delays.iter().min().unwrap_or(&0),
            delays.iter().max().unwrap_or(&0),
            out_q2.describe(),
            out_q1.describe(),
            in_q2.describe(),
            in_q1.describe(),
            twice_by_one_process.len(),
        );
        println!("{report}");
        figure(
            name,
            serde_json::json!({
                "seed": seed,
                "kills": kills,
                "kill_after_ms": [KILL_AFTER_MS.start, KILL_AFTER_MS.end],
                "kills_waiting_for_progress": waited_for_progress,
                "outgoing_qos2": out_q2.json(),
                "outgoing_qos1": out_q1.json(),
                "incoming_qos2": in_q2.json(),
                "incoming_qos1": in_q1.json(),
                "incoming_qos2_twice_by_one_process": twice_by_one_process.len(),
                "packet_ids_reused_at_broker": reused,
                "resent_dup_by_process": resent_by_process,
                "pubrel_resent_by_process": pubrel_resent,
                "resent_dup_by_broker": resent_by_broker,
            }),
        );
        for (what, t) in [("out q1", &out_q1), ("in q1", &in_q1), ("in q2", &in_q2)] {
            assert!(t.lost.is_empty(), "{what} lost messages: {report}");
        }
        assert!(out_q2.lost.is_empty(), "out q2 lost messages: {report}");
        // Outgoing QoS 2: every packet id is on disk before its PUBLISH is written and every
        // `released` flag before its PUBREL, so a restarted process never re-sends a
        // message the broker completed, nor a held one as new.
        assert!(
            out_q2.duplicates.is_empty(),
            "outgoing QoS 2 delivered more than once: {report}"
        );
        assert_eq!(reused, 0, "the broker saw packet ids reused: {report}");
        // Incoming QoS 2 handled again after a kill comes from the one crash window that
        // remains (a consumer done, the kill before its id is on disk: docs/ARCHITECTURE.md,
        // "Known gaps"): counted in the figure, not asserted.
        // The kills caught traffic in flight, or the test proved nothing.
        assert!(
            resent_by_process + pubrel_resent > 0 && resent_by_broker > 0,
            "nothing was resumed: {report}"
        );
    }
}
