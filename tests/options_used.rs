//! Every option does something (the Go original accepted half of its options and ignored
//! them): one test per option against a real mosquitto, each observing the effect from
//! outside the crate where it can (the broker's log, its socket queue, `mosquitto_sub`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_sessions::session::{GetStatus, InjectFailure};
use mqtt_sessions::Publish;
use mqtt_sessions::{Error, ErrorKind, EventData, GiveUpReason, QoS, SessionManager, SessionState};

const T: Duration = Duration::from_secs(30);

/// Timer wake-up and the event's way to the test on a loaded 2-core machine.
const SCHEDULING_ALLOWANCE: Duration = Duration::from_millis(750);

fn failure_kind(d: &EventData) -> Option<ErrorKind> {
    match d {
        EventData::SessionDisconnected { error: Some(f) } => Some(f.kind),
        _ => None,
    }
}

/// `performance.max_message_size` on receive: a QoS 1 message larger than the limit is
/// dropped (never delivered), counted (`dropped_oversized`) and still acknowledged (the
/// broker's log shows the PUBACK, and nothing is re-sent); the next one passes.
#[actix_rt::test]
async fn max_message_size_drops_counts_and_acknowledges_an_oversized_incoming_message() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("small", &broker.url()).client_id("small-cid");
    o.performance.max_message_size = 64;
    m.add_session(o).await.unwrap();
    let l = m
        .route("size/#")
        .qos(QoS::AtLeastOnce)
        .listen()
        .await
        .unwrap();
    m.wait_for_session("small", T).await.unwrap();
    publish(broker.port(), "size/big", &"x".repeat(65), 1, false);
    publish(broker.port(), "size/small", &"y".repeat(64), 1, false);
    let msg = tokio::time::timeout(T, l.recv()).await.unwrap().unwrap();
    assert_eq!(
        &*msg.topic, "size/small",
        "the oversized message was delivered"
    );
    drop(msg);
    let h = m.session("small").unwrap();
    assert_eq!(h.metrics().dropped_oversized, 1);
    assert!(
        broker
            .wait_for_log_async("Received PUBACK from small-cid (Mid: 2,", T)
            .await,
        "{}",
        broker.log()
    );
    let acks = broker
        .log()
        .matches("Received PUBACK from small-cid")
        .count();
    assert_eq!(acks, 2, "both messages acknowledged once each");
    assert_eq!(
        broker
            .log()
            .matches("Sending PUBLISH to small-cid (d1")
            .count(),
        0,
        "re-sent"
    );
    assert!(l.try_recv().is_none());
    m.shutdown().await;
}

/// `performance.write_timeout`: a QoS 1 publish sent to a frozen broker fails with
/// `PublishTimeout` once the timeout passed (checked every second), not before, and long
/// before the read timeout (keep-alive 30 s) would end the connection.
#[actix_rt::test]
async fn write_timeout_fails_a_publish_the_broker_never_acknowledges() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("wt", &broker.url());
    o.connect.keep_alive = Duration::from_secs(30);
    o.performance.write_timeout = Duration::from_secs(1);
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("wt", T).await.unwrap();
    broker.pause();
    let started = Instant::now();
    let e = tokio::time::timeout(
        T,
        h.publish(Publish::new("wt/x", "1").qos(QoS::AtLeastOnce)),
    )
    .await
    .unwrap()
    .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, Error::PublishTimeout { .. }), "{e}");
    // Overdue publishes are swept once a second: 1 s to 2 s, plus scheduling.
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_secs(2) + SCHEDULING_ALLOWANCE,
        "timed out after {took:?}"
    );
    assert_eq!(
        h.state(),
        SessionState::Connected,
        "the connection itself stays"
    );
    broker.resume();
    m.shutdown().await;
}

/// `performance.read_timeout`: with a 30 s keep-alive (default read timeout 45 s) and a
/// read timeout of 1.5 s, a frozen broker is declared dead (kind `Timeout`) within 1.5 s
/// plus the allowance.
#[actix_rt::test]
async fn read_timeout_replaces_a_silent_connection_after_the_configured_time() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = fast_opts("rt", &broker.url());
    o.connect.keep_alive = Duration::from_secs(30);
    o.performance.read_timeout = Some(Duration::from_millis(1500));
    m.add_session(o).await.unwrap();
    m.wait_for_session("rt", T).await.unwrap();
    broker.pause();
    let frozen = Instant::now();
    assert!(
        log.wait_count("rt", 1, T, |d| failure_kind(d) == Some(ErrorKind::Timeout))
            .await
    );
    let took = frozen.elapsed();
    broker.resume();
    assert!(
        took <= Duration::from_millis(1500) + SCHEDULING_ALLOWANCE,
        "detected after {took:?}"
    );
    m.wait_for_session("rt", T).await.unwrap();
    m.shutdown().await;
}

/// `performance.inflight`: with mosquitto frozen, 30 QoS 1 publishes are started; the
/// session writes exactly `inflight` (5) of them to the socket — measured as the bytes
/// waiting in mosquitto's receive queue (`/proc/net/tcp`), 13 bytes per PUBLISH — and the
/// rest wait. Resumed, the broker receives all 30.
#[actix_rt::test]
async fn inflight_bounds_the_publishes_the_broker_sees_unacknowledged() {
    init_tracing();
    const INFLIGHT: usize = 5;
    // PUBLISH, QoS 1, topic "inf/x", packet id, 2-byte payload: 1 + 1 + 2 + 5 + 2 + 2.
    const PUBLISH_BYTES: usize = 13;
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("inf", &broker.url()).client_id("inf-cid");
    o.connect.keep_alive = Duration::from_secs(60);
    o.performance.inflight = INFLIGHT as u16;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("inf", T).await.unwrap();
    let client_port = *client_ports(&broker, "inf-cid").last().unwrap();
    assert_eq!(broker_rx_queue(broker.port(), client_port), Some(0));
    broker.pause();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let h = h.clone();
            actix_rt::spawn(async move {
                h.publish(Publish::new("inf/x", format!("{i:02}")).qos(QoS::AtLeastOnce))
                    .await
            })
        })
        .collect();
    assert!(
        poll_until_async(T, || {
            let q = broker_rx_queue(broker.port(), client_port);
            async move { q >= Some(INFLIGHT * PUBLISH_BYTES) }
        })
        .await,
        "the session never filled its window: {:?} bytes queued",
        broker_rx_queue(broker.port(), client_port)
    );
    // Give the session every chance to write more than it may: a window of 1 s in
    // which the queue must not grow (an observation window, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = broker_rx_queue(broker.port(), client_port).unwrap();
    assert_eq!(
        queued,
        INFLIGHT * PUBLISH_BYTES,
        "{} publishes unacknowledged at the broker, inflight {INFLIGHT}",
        queued as f64 / PUBLISH_BYTES as f64
    );
    assert_eq!(h.metrics().inflight_messages, INFLIGHT as u64);
    broker.resume();
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(
        broker
            .log()
            .matches("Received PUBLISH from inf-cid")
            .count(),
        30
    );
    m.shutdown().await;
}

/// `reconnect.max_attempts`: against a port nobody listens on, with 3 attempts allowed,
/// the session makes exactly 3 connection attempts, then gives up: a `session_gave_up`
/// event says why (attempts exhausted, the last error), the state becomes `GaveUp` (so does
/// the metric's state code) and no further attempt is made.
#[actix_rt::test]
async fn max_attempts_gives_up_with_an_event_a_state_and_no_further_attempt() {
    init_tracing();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = fast_opts("giveup", &dead);
    o.reconnect.max_attempts = Some(3);
    o.reconnect.initial_delay = Duration::from_millis(50);
    o.reconnect.jitter = 0.0;
    let h = m.add_session(o).await.unwrap();
    let gave_up = |d: &EventData| matches!(d, EventData::SessionGaveUp { .. });
    assert!(
        log.wait_count("giveup", 1, T, gave_up).await,
        "{:?}",
        log.of("giveup")
    );
    assert_eq!(h.state(), SessionState::GaveUp);
    assert_eq!(h.metrics().state, SessionState::GaveUp.code());
    let reason = log.of("giveup").into_iter().find_map(|d| match d {
        EventData::SessionGaveUp { reason } => Some(reason),
        _ => None,
    });
    assert!(
        matches!(
            reason,
            Some(GiveUpReason::AttemptsExhausted {
                attempts: 3,
                last_error: Some(_)
            })
        ),
        "{reason:?}"
    );
    // Connection attempts announced so far, with every event of the session.
    let attempts = || {
        let events = log.of("giveup");
        let n = events
            .iter()
            .filter(|d| matches!(d, EventData::SessionConnecting { .. }))
            .count();
        (n, events)
    };
    // An observation window of several backoff delays in which nothing may happen.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (attempts_seen, events) = attempts();
    let failures = events.iter().filter(|d| failure_kind(d).is_some()).count();
    assert_eq!(h.metrics().connection_attempts, 3);
    assert_eq!((attempts_seen, failures), (3, 3), "{events:?}");
    assert_eq!(h.state(), SessionState::GaveUp);

    // Its actor restarted by actix (as after a panic in a handler): it stays given up and
    // starts no driver. The status request is answered by the restarted actor.
    h.addr().send(InjectFailure).await.unwrap();
    let status = h.addr().send(GetStatus).await.unwrap();
    assert_eq!(status.state, SessionState::GaveUp);
    // The same observation window: a driver would make its first attempt at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (attempts_seen, events) = attempts();
    assert_eq!(attempts_seen, 3, "{events:?}");
    assert_eq!(h.metrics().connection_attempts, 3);
    assert_eq!(h.state(), SessionState::GaveUp);
    m.shutdown().await;
}

/// `performance.max_pending_messages` against a connected but frozen mosquitto, with an
/// in-flight window of 2: 5 publishes are accepted, the 6th is refused with `QueueFull`;
/// once the broker resumes, the 5 reach `mosquitto_sub`.
#[actix_rt::test]
async fn max_pending_messages_refuses_publishes_past_the_limit_and_delivers_the_rest() {
    init_tracing();
    let broker = Mosquitto::start();
    let sub = Sub::spawn(broker.port(), "pend/#", 1);
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("pend", &broker.url());
    o.connect.keep_alive = Duration::from_secs(60);
    o.performance.max_pending_messages = 5;
    o.performance.inflight = 2;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("pend", T).await.unwrap();
    broker.pause();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let h = h.clone();
            actix_rt::spawn(async move {
                h.publish(Publish::new("pend/x", format!("{i}")).qos(QoS::AtLeastOnce))
                    .await
            })
        })
        .collect();
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().pending_messages;
            async move { n == 5 }
        })
        .await,
        "pending {}",
        h.metrics().pending_messages
    );
    let e = h
        .publish(Publish::new("pend/x", "overflow").qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::QueueFull { limit: 5, .. }), "{e}");
    broker.resume();
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    assert!(sub.wait_for_count_async(5, T).await, "{:?}", sub.lines());
    let mut got = sub.payloads();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    m.shutdown().await;
}

/// `performance.message_channel_size`: a `messages()` receiver of capacity 5 that is not
/// read gets exactly 5 of 20 QoS 0 messages; the other 15 are dropped and counted. QoS 1
/// messages wait for room instead: all 20 arrive once it is read.
#[actix_rt::test]
async fn message_channel_size_bounds_a_session_receiver() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("chan", &broker.url());
    o.performance.message_channel_size = 5;
    let h = m.add_session(o).await.unwrap();
    let rx = h.messages();
    h.subscribe("ch0/#", QoS::AtMostOnce).await.unwrap();
    h.subscribe("ch1/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("chan", T).await.unwrap();
    publish_many(broker.port(), "ch0/x", 20, 0);
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().messages_received;
            async move { n == 20 }
        })
        .await
    );
    assert_eq!(rx.len(), 5);
    assert_eq!(h.dropped_messages(), 15);
    let mut got = 0;
    while rx.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(got, 5);

    publish_many(broker.port(), "ch1/x", 20, 1);
    assert!(
        poll_until_async(T, || {
            let n = rx.len();
            async move { n == 5 }
        })
        .await
    );
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let msg = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
        assert!(rx.len() <= 5);
        seen.push(msg.payload_str().unwrap().to_string());
    }
    assert_eq!(seen, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(h.dropped_messages(), 15, "no QoS 1 message was dropped");
    m.shutdown().await;
}

/// Every reconnect option against a port nobody listens on: `initial_delay` 200 ms,
/// `factor` 3 and `max_delay` 1 s without jitter give the delays 0.2, 0.6, 1, 1 s exactly
/// (in the `session_reconnecting` events) and the attempts are at least that far apart;
/// with `jitter` 0.5 the delays spread within ±50 % of those and are not all equal.
#[actix_rt::test]
async fn reconnect_delays_follow_initial_delay_factor_max_delay_and_jitter() {
    init_tracing();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    for (name, jitter) in [("exact", 0.0), ("jittered", 0.5)] {
        let mut o = fast_opts(name, &dead);
        o.reconnect.initial_delay = Duration::from_millis(200);
        o.reconnect.factor = 3.0;
        o.reconnect.max_delay = Duration::from_secs(1);
        o.reconnect.jitter = jitter;
        o.reconnect.max_attempts = Some(5);
        m.add_session(o).await.unwrap();
    }
    let gave_up = |d: &EventData| matches!(d, EventData::SessionGaveUp { .. });
    for name in ["exact", "jittered"] {
        assert!(
            log.wait_count(name, 1, T, gave_up).await,
            "{:?}",
            log.of(name)
        );
    }
    let delays = |name: &str| -> Vec<Duration> {
        log.of(name)
            .iter()
            .filter_map(|d| match d {
                EventData::SessionReconnecting { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect()
    };
    let expected: Vec<Duration> = [200, 600, 1000, 1000]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    assert_eq!(delays("exact"), expected);
    let jittered = delays("jittered");
    assert_eq!(jittered.len(), 4);
    for (d, e) in jittered.iter().zip(&expected) {
        assert!(
            *d >= e.mul_f64(0.5) && *d <= e.mul_f64(1.5),
            "{jittered:?} outside ±50 % of {expected:?}"
        );
    }
    assert!(
        jittered.iter().zip(&expected).any(|(d, e)| d != e),
        "jitter 0.5 changed nothing: {jittered:?}"
    );
    // The attempts really wait: the times of the `session_connecting` events are at least
    // the announced delays apart.
    let times: Vec<_> = log
        .all()
        .into_iter()
        .filter(|e| &*e.session == "exact")
        .filter(|e| matches!(e.data, EventData::SessionConnecting { .. }))
        .map(|e| e.time)
        .collect();
    assert_eq!(times.len(), 5);
    for (w, d) in times.windows(2).zip(&expected) {
        let gap = w[1].duration_since(w[0]).unwrap();
        assert!(gap >= *d, "attempts {gap:?} apart, delay {d:?}");
    }
    m.shutdown().await;
}

/// The library publishing at QoS 2, end to end: `publish_to` returns after the full
/// PUBLISH / PUBREC / PUBREL / PUBCOMP exchange (in mosquitto's log), and a QoS 2
/// `mosquitto_sub` receives each message exactly once, at QoS 2.
#[actix_rt::test]
async fn a_qos2_publish_completes_the_four_way_handshake_and_arrives_exactly_once() {
    init_tracing();
    let broker = Mosquitto::start();
    let sub = Sub::options(broker.port(), "q2/#").qos(2).spawn();
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(fast_opts("q2", &broker.url()).client_id("q2-cid"))
        .await
        .unwrap();
    m.wait_for_session("q2", T).await.unwrap();
    for i in 0..10 {
        h.publish(Publish::new("q2/x", format!("{i}")).qos(QoS::ExactlyOnce))
            .await
            .unwrap();
    }
    let log = broker.log();
    for packet in [
        "Received PUBLISH from q2-cid (d0, q2",
        "Sending PUBREC to q2-cid",
        "Received PUBREL from q2-cid",
        "Sending PUBCOMP to q2-cid",
    ] {
        assert_eq!(log.matches(packet).count(), 10, "{packet}:\n{log}");
    }
    assert_eq!(h.metrics().messages_sent, 10);
    assert!(sub.wait_for_count_async(10, T).await, "{:?}", sub.lines());
    assert_eq!(
        sub.payloads(),
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        sub.debug_lines()
            .iter()
            .filter(|l| l.contains("Client") && l.contains("received PUBLISH") && l.contains("q2,"))
            .count(),
        10,
        "{:?}",
        sub.debug_lines()
    );
    m.shutdown().await;
}
