//! MQTT session state across reconnects: a persistent session re-sends its in-flight
//! publishes with their packet ids and DUP 1 [MQTT-4.4.0-1], and acknowledges a re-sent
//! incoming QoS 2 message without delivering it again; a clean session re-sends as new.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_sessions::{Publish, QoS, SessionManager};

const T: Duration = Duration::from_secs(20);

/// `(dup, qos, mid)` of every PUBLISH the broker received from `client` in `log`.
fn received(log: &str, client: &str) -> Vec<(u8, u8, u16)> {
    let needle = format!("Received PUBLISH from {client} (");
    log.lines()
        .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
        .filter_map(|rest| {
            let f: Vec<&str> = rest.splitn(5, ", ").collect();
            Some((
                f[0].strip_prefix('d')?.parse().ok()?,
                f[1].strip_prefix('q')?.parse().ok()?,
                f[3].strip_prefix('m')?.parse().ok()?,
            ))
        })
        .collect()
}

/// Publishes 3 QoS 1 and 3 QoS 2 messages while the broker is frozen (they are written,
/// not acknowledged), kills and restarts the broker (persistence on: it keeps the
/// session), and returns the broker log since the restart and the watcher.
async fn in_flight_at_broker_kill(clean: bool, client: &str) -> (String, Sub, Mosquitto) {
    init_tracing();
    let broker = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let watcher_id = format!("{client}-watch");
    let watcher = Sub::options(broker.port(), "st/out/#")
        .qos(2)
        .persistent(&watcher_id)
        .spawn();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("pub", &broker.url()).client_id(client.to_string());
    o.connect.clean_session = clean;
    m.add_session(o).await.unwrap();
    m.wait_for_session("pub", T).await.unwrap();
    assert!(broker.wait_for_autosave_async(T).await, "no autosave");
    watcher.stop();
    broker.pause();
    for i in 0..3 {
        for (qos, name) in [(QoS::AtLeastOnce, "q1"), (QoS::ExactlyOnce, "q2")] {
            m.enqueue(
                "pub",
                Publish::new(format!("st/out/{name}"), format!("{name}-{i}")).qos(qos),
            )
            .await
            .unwrap();
        }
    }
    let s = m.session("pub").unwrap();
    eventually_async(T, "6 publishes in flight", || {
        let n = s.metrics().inflight_messages;
        async move { n == 6 }
    })
    .await;
    broker.kill9();
    let mark = broker.log_len();
    broker.restart();
    eventually_async(T, "outbox empty after the restart", || {
        let n = s.metrics().pending_messages;
        async move { n == 0 }
    })
    .await;
    let watcher = Sub::options(broker.port(), "st/out/#")
        .qos(2)
        .persistent(&watcher_id)
        .spawn();
    let log = broker.log_since(mark);
    m.shutdown().await;
    (log, watcher, broker)
}

#[actix_rt::test]
async fn persistent_session_resends_in_flight_publishes_with_their_ids_and_dup_after_broker_restart(
) {
    let (log, watcher, broker) = in_flight_at_broker_kill(false, "st-persist").await;
    let got = received(&log, "st-persist");
    let dup: Vec<_> = got.iter().filter(|(d, _, _)| *d == 1).collect();
    assert_eq!(
        dup.len(),
        6,
        "expected the 6 in-flight publishes re-sent with DUP 1: {got:?}\n{}",
        broker.diagnostics()
    );
    // rumqttc numbered them 1..=6 on the first connection (no other request used an id).
    let mut mids: Vec<u16> = dup.iter().map(|(_, _, m)| *m).collect();
    mids.sort_unstable();
    assert_eq!(mids, vec![1, 2, 3, 4, 5, 6]);
    assert!(dup.iter().filter(|(_, q, _)| *q == 2).count() == 3);
    assert!(
        watcher.wait_for_count_async(6, T).await,
        "{:?}",
        watcher.lines()
    );
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for p in watcher.payloads() {
        *per.entry(p).or_default() += 1;
    }
    figure(
        "session-state-resend",
        serde_json::json!({"resent_dup": dup.len(), "delivered": per}),
    );
    for i in 0..3 {
        assert_eq!(
            per.get(&format!("q2-{i}")),
            Some(&1),
            "QoS 2 exactly once: {per:?}"
        );
    }
}

#[actix_rt::test]
async fn clean_session_resends_in_flight_publishes_as_new_after_broker_restart() {
    let (log, watcher, _broker) = in_flight_at_broker_kill(true, "st-clean").await;
    let got = received(&log, "st-clean");
    assert!(got.len() >= 6, "{got:?}");
    assert!(
        got.iter().all(|(d, _, _)| *d == 0),
        "a clean session re-sends as new (DUP 0): {got:?}"
    );
    // The watcher's session is persistent: it gets what the broker accepted.
    assert!(
        watcher.wait_for_count_async(6, T).await,
        "{:?}",
        watcher.lines()
    );
}

#[actix_rt::test]
async fn persistent_session_delivers_incoming_qos2_exactly_once_across_broker_restart() {
    init_tracing();
    let n = 40;
    let broker = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("sub", &broker.url()).client_id("st-sub".to_string());
    o.connect.clean_session = false;
    m.add_session(o).await.unwrap();
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let c = Arc::clone(&counts);
    let _route = m
        .route("st/in/#")
        .session("sub")
        .qos(QoS::ExactlyOnce)
        .handle(move |msg| {
            *c.lock()
                .unwrap()
                .entry(msg.payload_str().unwrap().to_string())
                .or_default() += 1;
            // A slow consumer keeps messages in flight (load, not synchronisation).
            std::thread::sleep(Duration::from_millis(40));
        })
        .await
        .unwrap();
    m.wait_for_session("sub", T).await.unwrap();
    assert!(broker.wait_for_autosave_async(T).await, "no autosave");
    let port = broker.port();
    actix_rt::task::spawn_blocking(move || publish_many(port, "st/in/x", n, 2))
        .await
        .unwrap();
    eventually_async(T, "10 messages handled", || {
        let k = counts.lock().unwrap().len();
        async move { k >= 10 }
    })
    .await;
    // SIGTERM: mosquitto saves its in-flight state on the way out.
    broker.stop();
    broker.restart();
    eventually_async(T, "every message handled", || {
        let k = counts.lock().unwrap().len();
        async move { k == n }
    })
    .await;
    // Every message released (PUBCOMP): nothing more can be re-sent.
    eventually_async(T, "every PUBREL answered", || {
        let k = broker.log().matches("Received PUBCOMP from st-sub").count();
        async move { k >= n }
    })
    .await;
    let log = broker.log();
    let resent = log
        .lines()
        .filter(|l| l.contains("Sending PUBLISH to st-sub (d1"))
        .count();
    let pubrels = log.matches("Sending PUBREL to st-sub").count();
    let counts = counts.lock().unwrap().clone();
    figure(
        "session-state-incoming",
        serde_json::json!({"messages": n, "resent_dup_by_broker": resent, "pubrel_sent": pubrels}),
    );
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?} (broker re-sent {resent})"
    );
    assert!(
        resent > 0,
        "the broker re-sent nothing: the test proved nothing\n{}",
        broker.diagnostics()
    );
    m.shutdown().await;
}
