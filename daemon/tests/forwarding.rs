//! Forwarding rules against real mosquitto brokers and the real daemon binary: order and
//! pipelining, store-and-forward through a cloud outage, QoS 2 end to end, no loop
//! between two daemons, and SIGKILLs at moments the test does not choose.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; the kill tests report their figures"
)]

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use support::*;

/// The first rule of `d`'s `/rules`.
fn first_rule(d: &Daemon) -> serde_json::Value {
    let (_, body) = d.get("/rules").expect("/rules answers");
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    rules[0].clone()
}

fn rule_u64(d: &Daemon, key: &str) -> u64 {
    first_rule(d)[key].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn pipelined_forwarding_keeps_each_topics_order_and_has_many_messages_in_flight() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    // 10 ms of round trip to the target: one message at a time would show a peak of 1.
    let link = Proxy::start(dst.port(), Duration::from_millis(5));
    let d = Daemon::start(&format!(
        "{HTTP}{}{}{}",
        session("src", "ord-src", src.port()),
        session("dst", "ord-dst", link.port()),
        rule("copy", "src", "in/#", "dst", "out/{topic}")
    ));
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "out/#", 1);
    const N: usize = 2000;
    const TOPICS: usize = 3;
    publish_on_topics(src.port(), TOPICS, N);
    assert!(
        sub.wait_for_count_async(N * TOPICS, T).await,
        "{} of {} forwarded\n{}",
        sub.count(),
        N * TOPICS,
        d.stderr()
    );
    assert_eq!(assert_each_topic_in_order(&sub), TOPICS);
    let peak = rule_u64(&d, "in_flight_peak");
    println!("forwarding peak in flight: {peak}");
    assert!(
        peak > 1,
        "one message at a time: peak in flight {peak}\n{:?}",
        first_rule(&d)
    );
}

/// Publishes `n` QoS 1 messages (payloads 0, 1, ...) on each of `topics` topics `in/t{k}`,
/// one publisher each, at once; returns when all are acknowledged.
fn publish_on_topics(port: u16, topics: usize, n: usize) {
    let publishers: Vec<_> = (0..topics)
        .map(|k| std::thread::spawn(move || publish_many(port, &format!("in/t{k}"), n, 1)))
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
}

/// Asserts that per topic the payloads (sequence numbers) `sub` received strictly
/// increase, and returns how many topics it saw.
fn assert_each_topic_in_order(sub: &Sub) -> usize {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for line in sub.lines() {
        let (topic, payload) = line.split_once(' ').unwrap();
        let seq: i64 = payload.parse().unwrap();
        let before = last.insert(topic.to_string(), seq).unwrap_or(-1);
        assert!(
            seq > before,
            "{topic}: {seq} arrived after {before} (order broken)"
        );
    }
    last.len()
}

/// The sum of `key` over every rule of `/rules`.
fn rules_sum(d: &Daemon, key: &str) -> u64 {
    let (_, body) = d.get("/rules").expect("/rules answers");
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    rules
        .as_array()
        .map_or(0, |r| r.iter().filter_map(|r| r[key].as_u64()).sum())
}

/// Session `dst` (client id `client_id`) on `port`, queueing at most `bound` publishes.
fn bounded_target(client_id: &str, port: u16, bound: usize) -> String {
    session("dst", client_id, port).replace(
        "max_pending_messages = 20000",
        &format!("max_pending_messages = {bound}"),
    )
}

#[tokio::test]
async fn refusals_by_a_full_target_outbox_are_retried_in_order_and_lose_nothing() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    let link = Proxy::start(dst.port(), Duration::ZERO);
    // The target queues at most 5 while its link is down. Each rule keeps within that
    // bound on its own (its lane stops taking at 5), but three rules, each from a source
    // session of its own, share the target: together they submit up to 15, and the
    // target refuses what does not fit.
    let target = bounded_target("full-dst", link.port(), 5);
    const TOPICS: usize = 3;
    let (mut sources, mut rules) = (String::new(), String::new());
    for k in 0..TOPICS {
        sources += &session(&format!("src{k}"), &format!("full-src{k}"), src.port());
        rules += &rule(
            &format!("copy{k}"),
            &format!("src{k}"),
            &format!("in/t{k}"),
            "dst",
            "out/{topic}",
        );
        rules += "window = 100\n";
    }
    let d = Daemon::start(&format!("{HTTP}{sources}{target}{rules}"));
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "out/#", 1);
    link.cut();
    const N: usize = 60;
    publish_on_topics(src.port(), TOPICS, N);
    // The target session refuses what does not fit (queue full): the lane is held and
    // those messages wait for a retry, in order.
    assert!(
        poll_until_async(T, || async { rules_sum(&d, "retries") > 0 }).await,
        "no retry while the target's queue was full: {}\n{}",
        d.get("/rules").map(|(_, b)| b).unwrap_or_default(),
        d.stderr()
    );
    link.restore();
    assert!(
        sub.wait_for_count_async(N * TOPICS, T).await,
        "{} of {} forwarded after the link came back: {}\n{}",
        sub.count(),
        N * TOPICS,
        d.get("/rules").map(|(_, b)| b).unwrap_or_default(),
        d.stderr()
    );
    assert_eq!(assert_each_topic_in_order(&sub), TOPICS);
    // The counter follows the target broker's PUBACKs, which may come after the
    // subscriber's copies.
    let all = poll_until_async(T, || async {
        rules_sum(&d, "forwarded") == (N * TOPICS) as u64
    })
    .await;
    let body = d.get("/rules").map(|(_, b)| b).unwrap_or_default();
    assert!(all, "forwarded counter: {body}");
    assert_eq!(rules_sum(&d, "dropped"), 0, "{body}");
}

#[tokio::test]
async fn a_rule_whose_window_is_above_the_targets_bound_stops_taking_there_without_refusals() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    let link = Proxy::start(dst.port(), Duration::ZERO);
    let target = bounded_target("bound-dst", link.port(), 5);
    let d = Daemon::start(&format!(
        "{HTTP}{}{target}{}window = 100\n",
        session("src", "bound-src", src.port()),
        rule("copy", "src", "in/#", "dst", "out/{topic}")
    ));
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "out/#", 1);
    link.cut();
    const N: usize = 30;
    publish_on_topics(src.port(), 1, N);
    // The lane fills the target's outbox and stops there: 5 taken, none refused.
    assert!(
        poll_until_async(T, || async { rule_u64(&d, "in_flight") == 5 }).await,
        "the rule did not fill the target's bound: {}\n{}",
        first_rule(&d),
        d.stderr()
    );
    link.restore();
    assert!(
        sub.wait_for_count_async(N, T).await,
        "{} of {N} forwarded after the link came back: {}\n{}",
        sub.count(),
        first_rule(&d),
        d.stderr()
    );
    let r = first_rule(&d);
    assert_eq!(r["retries"], 0, "refused past the target's bound: {r}");
    assert!(r["in_flight_peak"].as_u64().unwrap_or(0) <= 5, "{r}");
    assert_eq!(r["dropped"], 0, "{r}");
}

#[tokio::test]
async fn a_10s_cloud_outage_with_a_store_loses_nothing_and_the_backlog_age_rises_then_clears() {
    // The source broker at mosquitto's default queue limit: what a rule does not take
    // during the outage, this broker would drop.
    let src = Mosquitto::start_with(MosquittoConfig::new().max_queued_messages(1000));
    let dst = Mosquitto::start();
    let link = Proxy::start(dst.port(), Duration::ZERO);
    let store = tempfile::tempdir().unwrap();
    let d = Daemon::start(&format!(
        "{HTTP}[store]\npath = \"{}\"\n{}{}{}",
        store.path().join("data").display(),
        persistent_session("src", "out-src", src.port()),
        session("dst", "out-dst", link.port()),
        rule("copy", "src", "in/#", "dst", "out/{topic}")
    ));
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "out/#", 1);
    // 200 messages a second for 25 s, the outage in the middle.
    const RATE: u32 = 200;
    const N: usize = 5000;
    let port = src.port();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || paced_publisher(port, &["in/x"], Some(N), RATE, stop))
    };
    assert!(
        wait_distinct(&sub, 500, T).await,
        "nothing forwarded before the outage\n{}",
        d.stderr()
    );
    link.cut();
    let started = std::time::Instant::now();
    // The outage lasts until the oldest waiting message is 10 s old.
    let aged = poll_until_async(Duration::from_secs(40), || async {
        rule_u64(&d, "oldest_age_ms") >= 10_000
    })
    .await;
    let during = first_rule(&d);
    link.restore();
    println!(
        "outage of {:?}; backlog at its end: {during}",
        started.elapsed()
    );
    assert!(aged, "the backlog's age did not rise: {during}");
    assert!(
        during["waiting"].as_u64().unwrap_or(0) > 1000,
        "the target's outbox took the backlog: {during}"
    );
    let sent = publisher.join().unwrap();
    assert_eq!(sent, N);
    assert!(
        wait_distinct(&sub, N, Duration::from_secs(60)).await,
        "{} of {N} after the outage\n{}",
        distinct_and_duplicates(&sub).0.len(),
        d.stderr()
    );
    assert_none_missing("10 s cloud outage with a store", &sub, N);
    let cleared = poll_until_async(T, || async {
        let r = first_rule(&d);
        r["oldest_age_ms"] == 0 && r["waiting"] == 0 && r["in_flight"] == 0
    })
    .await;
    assert!(cleared, "backlog left after the outage: {}", first_rule(&d));
}

#[tokio::test]
async fn qos_keep_carries_qos_2_end_to_end() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    let d = Daemon::start(&format!(
        "{HTTP}{}{}\n[[forward]]\nname = \"q2\"\nfrom = \"src\"\nfilter = \"in/#\"\nto = \"dst\"\ntopic = \"out/{{topic}}\"\nqos = \"keep\"\n",
        session("src", "q2-src", src.port()),
        session("dst", "q2-dst", dst.port()),
    ));
    d.wait_ready().await;
    let port = dst.port();
    let seen = std::thread::spawn(move || sub_once(port, "out/#", "%q %t %p", 20));
    let got = poll_until_async(T, || async {
        publish(src.port(), "in/a", "exactly-once", 2, false);
        seen.is_finished()
    })
    .await;
    assert!(got, "{}", d.stderr());
    assert_eq!(
        seen.join().unwrap().as_deref(),
        Some("2 out/in/a exactly-once"),
        "{}",
        d.stderr()
    );
}

#[tokio::test]
async fn rules_a_to_b_and_b_to_a_in_two_mqtt5_daemons_carry_a_message_across_once() {
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let v5 = |s: String| {
        s.replace(
            "[sessions.connect]\n",
            "protocol = \"5\"\n[sessions.connect]\n",
        )
    };
    let one = Daemon::start(&format!(
        "{HTTP}{}{}{}",
        v5(session("a", "loop-a1", a.port())),
        v5(session("b", "loop-b1", b.port())),
        rule("a-to-b", "a", "x/#", "b", "{topic}")
    ));
    let two = Daemon::start(&format!(
        "{HTTP}{}{}{}",
        v5(session("b", "loop-b2", b.port())),
        v5(session("a", "loop-a2", a.port())),
        rule("b-to-a", "b", "x/#", "a", "{topic}")
    ));
    one.wait_ready().await;
    two.wait_ready().await;
    let on_a = Sub::spawn(a.port(), "x/#", 1);
    let on_b = Sub::spawn(b.port(), "x/#", 1);
    publish(a.port(), "x/from-a", "1", 1, false);
    publish(b.port(), "x/from-b", "2", 1, false);
    // Each message crosses once; the rule on the far side sees it has been there.
    let settled = poll_until_async(T, || async {
        rule_u64(&one, "forwarded") == 1
            && rule_u64(&two, "forwarded") == 1
            && rule_u64(&one, "looped") == 1
            && rule_u64(&two, "looped") == 1
    })
    .await;
    assert!(
        settled,
        "one: {} two: {}\n{}\n{}",
        first_rule(&one),
        first_rule(&two),
        one.stderr(),
        two.stderr()
    );
    // Both messages reach both brokers' subscribers (the counters move on the PUBACK,
    // the subscriber's copy may come a moment later); the loop counters show that
    // nothing else can follow.
    assert!(
        on_a.wait_for_count_async(2, T).await,
        "on A: {:?}",
        on_a.lines()
    );
    assert!(
        on_b.wait_for_count_async(2, T).await,
        "on B: {:?}",
        on_b.lines()
    );
    let mut got_a = on_a.lines();
    let mut got_b = on_b.lines();
    got_a.sort();
    got_b.sort();
    assert_eq!(got_a, ["x/from-a 1", "x/from-b 2"], "on A");
    assert_eq!(got_b, ["x/from-a 1", "x/from-b 2"], "on B");
}

#[tokio::test]
async fn a_link_state_topic_says_1_while_connected_and_0_after_a_clean_stop() {
    let edge = Mosquitto::start();
    let cloud = Mosquitto::start();
    let config = format!(
        "{HTTP}{}{}",
        session("edge", "ls-edge", edge.port()),
        session("cloud", "ls-cloud", cloud.port()).replace(
            "[sessions.connect]\n",
            "link_state_topic = \"bridge/cloud/state\"\n[sessions.connect]\n"
        ),
    );
    let mut d = Daemon::start(&config);
    d.wait_ready().await;
    let port = cloud.port();
    let up = poll_until_async(T, || async {
        sub_once(port, "bridge/cloud/state", "%r %p", 1).as_deref() == Some("1 1")
    })
    .await;
    assert!(up, "no retained 1 while connected\n{}", d.stderr());
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(T).and_then(|s| s.code()),
        Some(0),
        "{}",
        d.stderr()
    );
    assert_eq!(
        sub_once(port, "bridge/cloud/state", "%r %p", 5).as_deref(),
        Some("1 0"),
        "a clean stop publishes a retained 0\n{}",
        d.stderr()
    );
    // Killed: the broker publishes the will (a retained 0) once the keep-alive lapses.
    let d = Daemon::start(&config);
    d.wait_ready().await;
    let up = poll_until_async(T, || async {
        sub_once(port, "bridge/cloud/state", "%r %p", 1).as_deref() == Some("1 1")
    })
    .await;
    assert!(up, "no retained 1 after the restart\n{}", d.stderr());
    d.signal("KILL");
    let down = poll_until_async(T, || async {
        sub_once(port, "bridge/cloud/state", "%r %p", 1).as_deref() == Some("1 0")
    })
    .await;
    assert!(down, "no will after a SIGKILL");
}

/// A restarted daemon must forward again within this.
const PROGRESS: Duration = Duration::from_secs(10);

/// Messages the rule holds: in flight plus waiting for the target's broker.
fn backlog(d: &Daemon) -> u64 {
    d.get("/rules")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .map_or(0, |r| {
            r[0]["in_flight"].as_u64().unwrap_or(0) + r[0]["waiting"].as_u64().unwrap_or(0)
        })
}

/// Waits (up to 5 s) until `d`'s rule holds messages, so that a kill lands mid-flight.
async fn wait_in_flight(d: &Daemon) -> bool {
    poll_until_async(Duration::from_secs(5), || async { backlog(d) > 0 }).await
}

#[tokio::test]
async fn a_daemon_sigkilled_ten_times_while_forwarding_with_a_store_loses_nothing() {
    let src = Mosquitto::start_with(MosquittoConfig::new().max_queued_messages(100_000));
    let dst = Mosquitto::start_with(MosquittoConfig::new().max_queued_messages(100_000));
    let store = tempfile::tempdir().unwrap();
    let config = format!(
        "{HTTP}[store]\npath = \"{}\"\n{}{}{}",
        store.path().join("data").display(),
        persistent_session("src", "kill-src", src.port()),
        // A clean target: its QoS 1 publishes go to the wire while their outbox write
        // runs, so a kill can land between the send and the write. (A persistent target
        // writes first; `tests/random_kill.rs` kills that path 200 times.)
        session("dst", "kill-dst", dst.port()),
        rule("copy", "src", "load/#", "dst", "copied/{topic}")
    );
    let sub = Sub::spawn(dst.port(), "copied/#", 1);
    const N: usize = 10_000;
    const KILLS: usize = 10;
    // The first daemon subscribes the persistent source session before anything is sent;
    // from then on the source broker keeps what the daemon has not acknowledged.
    let mut daemon = Daemon::start(&config);
    daemon.wait_ready().await;
    let port = src.port();
    let stop = Arc::new(AtomicBool::new(false));
    // Paced so that the ten kills land while the publisher still runs.
    let publisher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || paced_publisher(port, &["load/x"], Some(N), 300, stop))
    };
    let mut dups_before = 0;
    for kill in 1..=KILLS {
        let distinct = distinct_and_duplicates(&sub).0.len();
        // Every daemon, the restarted ones included, forwards within a few seconds.
        let progressed = wait_distinct(&sub, (distinct + 1).min(N), PROGRESS).await;
        assert!(
            progressed,
            "daemon {kill} forwarded nothing in {PROGRESS:?} ({distinct} of {N} so far); /sessions: {:?}; /rules: {:?}\n{}",
            daemon.get("/sessions"),
            daemon.get("/rules"),
            daemon.stderr()
        );
        // Then runs for about a twelfth of the messages before it is killed, while
        // its rule holds messages.
        let target = (distinct + N / 12).min(N);
        assert!(
            wait_distinct(&sub, target, T).await,
            "daemon {kill} stalled at {} of {N}\n{}",
            distinct_and_duplicates(&sub).0.len(),
            daemon.stderr()
        );
        let mid_flight = wait_in_flight(&daemon).await;
        daemon.signal("KILL");
        let _ = daemon.wait_exit(Duration::from_secs(10));
        let (distinct, dups) = distinct_and_duplicates(&sub);
        println!(
            "kill {kill}: {} distinct forwarded so far, {} duplicates since the previous kill, rule held messages at the kill: {mid_flight}",
            distinct.len(),
            dups - dups_before
        );
        dups_before = dups;
        assert!(
            mid_flight || distinct.len() >= N,
            "kill {kill} would land with nothing in flight"
        );
        daemon = Daemon::start(&config);
        daemon.wait_ready().await;
    }
    assert_eq!(publisher.join().unwrap(), N);
    let last = wait_distinct(&sub, N, Duration::from_secs(120)).await;
    if !last {
        println!("last daemon's log:\n{}", daemon.stderr());
        println!("last daemon's /rules:\n{:?}", daemon.get("/rules"));
    }
    assert_none_missing("10 SIGKILLs with a store", &sub, N);
    drop(daemon);
}

#[tokio::test]
async fn two_daemons_sharing_a_subscription_lose_nothing_when_one_is_sigkilled_and_restarted() {
    let broker = Mosquitto::start_with(MosquittoConfig::new().max_queued_messages(100_000));
    let store = tempfile::tempdir().unwrap();
    let config = |i: u32| {
        format!(
            "{HTTP}[store]\npath = \"{}\"\n{}{}{}",
            store.path().join(format!("data-{i}")).display(),
            persistent_session("src", &format!("kshare-src-{i}"), broker.port()),
            session("dst", &format!("kshare-dst-{i}"), broker.port()),
            rule(
                "jobs",
                "src",
                "$share/workers/jobs/#",
                "dst",
                "done/{topic}"
            )
        )
    };
    let (one, two) = (Daemon::start(&config(1)), Daemon::start(&config(2)));
    one.wait_ready().await;
    two.wait_ready().await;
    let sub = Sub::spawn(broker.port(), "done/#", 1);
    const N: usize = 5000;
    let port = broker.port();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || paced_publisher(port, &["jobs/x"], Some(N), 500, stop))
    };
    assert!(wait_distinct(&sub, N / 5, T).await, "{}", two.stderr());
    let mid_flight = wait_in_flight(&two).await;
    two.signal("KILL");
    let mut two = two;
    let _ = two.wait_exit(Duration::from_secs(10));
    assert!(mid_flight, "the kill would land with nothing in flight");
    let restarted = Daemon::start(&config(2));
    restarted.wait_ready().await;
    // The restarted member takes its share again.
    let back = poll_until_async(T, || async {
        restarted.received("src") > 0 && rule_u64(&restarted, "forwarded") > 0
    })
    .await;
    assert!(
        back,
        "the restarted member forwards nothing: {:?}\n{}",
        restarted.get("/rules"),
        restarted.stderr()
    );
    assert_eq!(publisher.join().unwrap(), N);
    let _ = wait_distinct(&sub, N, Duration::from_secs(60)).await;
    assert_none_missing("$share group, one daemon SIGKILLed", &sub, N);
    drop(one);
}
