//! The runtime model against a real mosquitto: sessions run on the manager's own pool of
//! worker threads, not on the thread that created the manager.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::*;
use mqtt_sessions::session::InjectFailure;
use mqtt_sessions::Publish;
use mqtt_sessions::{GiveUpReason, SessionManager, SupervisionOptions};

const T: Duration = Duration::from_secs(30);

fn this_thread() -> String {
    let t = std::thread::current();
    t.name()
        .map_or_else(|| format!("{:?}", t.id()), str::to_string)
}

#[actix_rt::test]
async fn with_two_workers_the_drivers_of_two_sessions_run_on_two_threads_neither_the_callers() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::builder().workers(2).build().unwrap();
    let a = m.add_session(fast_opts("a", &broker.url())).await.unwrap();
    let b = m.add_session(fast_opts("b", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    assert_ne!(a.worker(), b.worker(), "placed on the least loaded worker");
    let (ta, tb) = (a.driver_thread().unwrap(), b.driver_thread().unwrap());
    let here = this_thread();
    assert_ne!(ta, tb, "two sessions, two threads");
    assert_ne!(ta, here, "the caller's thread runs no session");
    assert_ne!(tb, here, "the caller's thread runs no session");
    // A third session goes to the worker with the fewest sessions: both have one, so the
    // first; removing a session frees its place.
    let c = m.add_session(fast_opts("c", &broker.url())).await.unwrap();
    assert_eq!(c.worker(), 0);
    m.remove_session("b").await.unwrap();
    let d = m.add_session(fast_opts("d", &broker.url())).await.unwrap();
    assert_eq!(d.worker(), 1, "b's worker is the least loaded again");
    m.wait_for_all_sessions(T).await.unwrap();
    m.shutdown().await;
}

/// An actix-web handler that builds a manager in the web worker's thread, connects one
/// session and answers `{handler thread} {driver thread}`.
async fn make_manager(url: web::Data<String>) -> HttpResponse {
    let m = SessionManager::builder().workers(1).build().unwrap();
    let h = m.add_session(fast_opts("web", &url)).await.unwrap();
    m.wait_for_session("web", T).await.unwrap();
    let answer = format!("{} {}", this_thread(), h.driver_thread().unwrap());
    m.shutdown().await;
    HttpResponse::Ok().body(answer)
}

#[actix_rt::test]
async fn a_manager_created_inside_an_actix_web_worker_runs_its_sessions_on_its_own_pool() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(url.clone()))
            .route("/", web::get().to(make_manager))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let res = http_get(addr, "/").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let (web_thread, driver_thread) = res.body.split_once(' ').unwrap();
    assert_ne!(
        web_thread, driver_thread,
        "the session's connection runs on the manager's worker, not on the web worker"
    );
    handle.stop(true).await;
}

/// One raw rumqttc client (not the crate under test) publishing probes.
fn probe_client(port: u16) -> rumqttc::AsyncClient {
    let mut o = rumqttc::MqttOptions::new("stall-probe", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    actix_rt::spawn(async move { while el.poll().await.is_ok() {} });
    client
}

#[actix_rt::test]
async fn a_store_taking_two_seconds_per_flush_stalls_neither_keep_alive_nor_delivery_of_other_sessions(
) {
    init_tracing();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder()
        .store(dir.path().join("db"))
        .workers(2)
        .inject_flush_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    // The writer: a persistent session whose route changes (subscription saves) and QoS 1
    // publishes (durable outbox) each wait for a 2 s flush.
    let mut w = fast_opts("writer", &broker.url()).client_id("stall-writer".to_string());
    w.connect.clean_session = false;
    w.connect.persistent = true;
    m.add_session(w).await.unwrap();
    // The others: a 1 s keep-alive (read timeout 1.5 s), each with a QoS 1 route.
    let mut listeners = Vec::new();
    for i in 0..3 {
        let name = format!("other-{i}");
        let mut o = fast_opts(&name, &broker.url());
        o.connect.keep_alive = Duration::from_secs(1);
        m.add_session(o).await.unwrap();
        listeners.push(m.listen_to(&name, &format!("probe/{i}")).await.unwrap());
    }
    m.wait_for_all_sessions(T).await.unwrap();
    let reconnects_before: Vec<u64> = (0..3)
        .map(|i| {
            m.session(&format!("other-{i}"))
                .unwrap()
                .metrics()
                .reconnects
        })
        .collect();

    // Stall the store: route churn on the durable session and durable publishes.
    let stalling = m.clone();
    let stall = actix_rt::spawn(async move {
        let started = std::time::Instant::now();
        let mut publish_times = Vec::new();
        while started.elapsed() < Duration::from_secs(5) {
            let r = stalling
                .route("churn/#")
                .session("writer")
                .name("churn")
                .listen()
                .await
                .unwrap();
            drop(r);
            let t = std::time::Instant::now();
            stalling
                .publish(
                    "writer",
                    Publish::new("stall/x", "x").qos(mqtt_sessions::QoS::AtLeastOnce),
                )
                .await
                .unwrap();
            publish_times.push(t.elapsed());
        }
        publish_times
    });

    // Meanwhile: QoS 1 round trips from a raw client through each other session's route.
    let probe = probe_client(broker.port());
    let mut rtts = Vec::new();
    let started = std::time::Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(5) {
        for (i, l) in listeners.iter().enumerate() {
            n += 1;
            let t = std::time::Instant::now();
            probe
                .publish(
                    format!("probe/{i}"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    n.to_string(),
                )
                .await
                .unwrap();
            let msg = tokio::time::timeout(T, l.recv()).await.unwrap().unwrap();
            assert_eq!(msg.payload_str().unwrap(), n.to_string());
            rtts.push(t.elapsed());
        }
        // Pacing of the probes (not synchronisation).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publish_times = stall.await.unwrap();
    let slowest_publish = publish_times.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_publish >= Duration::from_millis(1900),
        "the store really stalled: a durable publish took {slowest_publish:?}"
    );
    rtts.sort();
    let p90 = rtts[rtts.len() * 9 / 10];
    let max = *rtts.last().unwrap();
    println!(
        "figure: {} round trips during the stall: p50 {:?}, p90 {p90:?}, max {max:?}; durable publishes took up to {slowest_publish:?}",
        rtts.len(),
        rtts[rtts.len() / 2]
    );
    assert!(
        p90 < Duration::from_millis(50),
        "QoS 1 round trip p90 {p90:?} during the stall"
    );
    assert!(
        max < Duration::from_secs(1),
        "QoS 1 round trip max {max:?} during the stall"
    );
    for (i, before) in reconnects_before.iter().enumerate() {
        let s = m.session(&format!("other-{i}")).unwrap();
        assert_eq!(
            s.metrics().reconnects,
            *before,
            "other-{i} lost its connection during the stall"
        );
        assert_eq!(
            s.state(),
            mqtt_sessions::SessionState::Connected,
            "other-{i}"
        );
    }
    m.shutdown().await;
}

/// Time from now until the next `session_connecting` event of `session` on `events`.
async fn until_next_attempt(events: &mut mqtt_sessions::EventStream, session: &str) -> Duration {
    let t = std::time::Instant::now();
    loop {
        let ev = tokio::time::timeout(T, events.recv())
            .await
            .expect("a connection attempt in time")
            .expect("event stream open");
        if &*ev.session == session && ev.kind() == mqtt_sessions::EventKind::SessionConnecting {
            return t.elapsed();
        }
    }
}

fn supervision(initial_ms: u64, healthy_after: Duration, max_restarts: u32) -> SupervisionOptions {
    let mut s = SupervisionOptions::default();
    s.initial_delay = Duration::from_millis(initial_ms);
    s.max_delay = Duration::from_secs(10);
    s.factor = 2.0;
    s.jitter = 0.0;
    s.healthy_after = healthy_after;
    s.max_restarts = max_restarts;
    s.window = Duration::from_secs(600);
    s
}

#[actix_rt::test]
async fn a_session_failing_repeatedly_is_restarted_with_growing_delays_reset_after_a_healthy_run() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::builder()
        .supervision(supervision(200, Duration::from_secs(2), 10))
        .build()
        .unwrap();
    let h = m.add_session(fast_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let mut events = m.events();
    let mut delays = Vec::new();
    for _ in 0..3 {
        h.addr().send(InjectFailure).await.unwrap();
        delays.push(until_next_attempt(&mut events, "s").await);
        m.wait_for_session("s", T).await.unwrap();
    }
    println!("figure: restart delays {delays:?}");
    for (d, want_ms) in delays.iter().zip([200u64, 400, 800]) {
        let want = Duration::from_millis(want_ms);
        assert!(
            *d >= want && *d < want + Duration::from_millis(700),
            "delays {delays:?}: expected about {want:?}"
        );
    }
    // A healthy run (longer than `healthy_after`, 2 s) resets the delay. Waiting for
    // time to pass is the subject of this step.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    h.addr().send(InjectFailure).await.unwrap();
    let after_healthy = until_next_attempt(&mut events, "s").await;
    assert!(
        after_healthy < Duration::from_millis(200 + 700),
        "after a healthy run the delay starts over: {after_healthy:?}"
    );
    m.wait_for_session("s", T).await.unwrap();
    assert_eq!(h.status().restarts, 4);
    m.shutdown().await;
}

#[actix_rt::test]
async fn past_the_restart_limit_a_session_gives_up_with_event_state_metric_and_wait_error() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::builder()
        .supervision(supervision(50, Duration::from_secs(600), 2))
        .build()
        .unwrap();
    let h = m.add_session(fast_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let gave_up = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&gave_up);
    let _guard = m.on_event(mqtt_sessions::EventKind::SessionGaveUp, move |ev| {
        seen.lock().unwrap().push(ev.clone());
    });
    for i in 1..=2 {
        h.addr().send(InjectFailure).await.unwrap();
        let restarted = poll_until_async(T, || {
            let n = h.status().restarts;
            async move { n == i }
        })
        .await;
        assert!(restarted, "restart {i}");
        m.wait_for_session("s", T).await.unwrap();
    }
    // The third failure within the window is one too many.
    h.addr().send(InjectFailure).await.unwrap();
    let retired = poll_until_async(T, || {
        let st = h.state();
        async move { st == mqtt_sessions::SessionState::GaveUp }
    })
    .await;
    assert!(retired, "state {:?}", h.state());
    let err = m.wait_for_session("s", T).await.unwrap_err();
    assert!(
        matches!(&err, mqtt_sessions::Error::SessionGaveUp { session, .. } if session == "s"),
        "{err:?}"
    );
    assert!(err.to_string().contains("gave up"), "{err}");
    assert_eq!(h.state(), mqtt_sessions::SessionState::GaveUp);
    assert!(matches!(
        h.status().gave_up,
        Some(GiveUpReason::TooManyRestarts {
            restarts: 3,
            last_failure: mqtt_sessions::ActorFailure::ActorStopped,
            ..
        })
    ));
    // The typed failure reads as its name in JSON (the `session_gave_up` event, `/events`).
    let json = serde_json::to_value(h.status().gave_up).unwrap();
    assert_eq!(json["reason"], "too_many_restarts", "{json}");
    assert_eq!(json["last_failure"], "actor_stopped", "{json}");
    assert_eq!(m.status()["s"], mqtt_sessions::SessionState::GaveUp);
    assert!(
        poll_until_async(T, || {
            let n = gave_up.lock().unwrap().len();
            async move { n == 1 }
        })
        .await,
        "one session_gave_up event"
    );
    let text = m.metrics_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("mqtt_sessions_sessions{")
                && l.contains("state=\"gave_up\"")
                && l.ends_with(" 1")),
        "sessions by state counts it:\n{text}"
    );
    let publish = m
        .publish(
            "s",
            Publish::new("x", "y").qos(mqtt_sessions::QoS::AtLeastOnce),
        )
        .await;
    assert!(
        matches!(publish, Err(mqtt_sessions::Error::SessionGaveUp { .. })),
        "{publish:?}"
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_session_out_of_connection_attempts_gives_up_with_the_last_error() {
    init_tracing();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("s", &format!("mqtt://127.0.0.1:{}", free_port()));
    o.reconnect.max_attempts = Some(2);
    o.reconnect.initial_delay = Duration::from_millis(50);
    let h = m.add_session(o).await.unwrap();
    let err = m.wait_for_session("s", T).await.unwrap_err();
    assert!(
        matches!(err, mqtt_sessions::Error::SessionGaveUp { .. }),
        "{err:?}"
    );
    match h.status().gave_up {
        Some(GiveUpReason::AttemptsExhausted {
            attempts: 2,
            last_error: Some(e),
        }) => assert_eq!(e.kind, mqtt_sessions::ErrorKind::Io),
        other => panic!("{other:?}"),
    }
    m.shutdown().await;
}

/// `publish` waits for the broker and returns its refusal; `enqueue` returns on
/// acceptance and reports the same refusal later as an event and a counter.
async fn publish_and_enqueue_report_broker_limits(with_store: bool) {
    init_tracing();
    // An MQTT 5 broker that announces a Maximum Packet Size of 300 bytes in its CONNACK.
    let broker = Mosquitto::start_with(MosquittoConfig::new().extra("max_packet_size 300\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut b = SessionManager::builder();
    if with_store {
        b = b.store(dir.path().join("db"));
    }
    let m = b.build().unwrap();
    let mut o = fast_opts("s", &broker.url());
    o.protocol = mqtt_sessions::Protocol::V5;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let qos1 = mqtt_sessions::QoS::AtLeastOnce;

    // Fits: `publish` returns once the broker acknowledged it.
    m.publish("s", mqtt_sessions::Publish::new("fits", "small").qos(qos1))
        .await
        .unwrap();
    assert_eq!(h.metrics().messages_sent, 1, "completed on the PUBACK");

    // Too large for the broker (not for the session's own 32 KiB limit).
    let big = vec![b'x'; 1000];
    let err = m
        .publish(
            "s",
            mqtt_sessions::Publish::new("big", big.clone()).qos(qos1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, mqtt_sessions::Error::PacketTooLarge { max: 300, .. }),
        "{err:?}"
    );

    let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&failed);
    let _guard = m.on_event(mqtt_sessions::EventKind::PublishFailed, move |ev| {
        seen.lock().unwrap().push(ev.clone());
    });
    m.enqueue("s", mqtt_sessions::Publish::new("big", big).qos(qos1))
        .await
        .expect("accepted: the broker's limit is met only later");
    assert!(
        poll_until_async(T, || {
            let n = failed.lock().unwrap().len();
            async move { n == 1 }
        })
        .await,
        "a publish_failed event"
    );
    match &failed.lock().unwrap()[0].data {
        mqtt_sessions::EventData::PublishFailed { topic, error } => {
            assert_eq!(topic, "big");
            assert!(error.contains("300"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.metrics().publish_failures, 1);
    assert!(m
        .metrics_text()
        .lines()
        .any(|l| l.starts_with("mqtt_sessions_publish_failures_total{") && l.ends_with(" 1")));
    m.shutdown().await;
}

#[actix_rt::test]
async fn with_a_store_publish_returns_the_brokers_refusal_and_enqueue_reports_it_as_an_event() {
    publish_and_enqueue_report_broker_limits(true).await;
}

#[actix_rt::test]
async fn without_a_store_publish_returns_the_brokers_refusal_and_enqueue_reports_it_as_an_event() {
    publish_and_enqueue_report_broker_limits(false).await;
}

/// A session with a short keep-alive and a `Backpressure` (default) route of capacity 10
/// on `bp/#` at `qos`, whose listener is returned.
async fn backpressure_route(
    m: &SessionManager,
    url: &str,
    keep_alive: Duration,
    qos: mqtt_sessions::QoS,
) -> (mqtt_sessions::SessionHandle, mqtt_sessions::Listener) {
    let mut o = fast_opts("bp", url);
    o.connect.keep_alive = keep_alive;
    let h = m.add_session(o).await.unwrap();
    let l = m
        .route("bp/#")
        .session("bp")
        .qos(qos)
        .capacity(10)
        .listen()
        .await
        .unwrap();
    m.wait_for_session("bp", T).await.unwrap();
    (h, l)
}

/// The `bp` session never lost its connection: no reconnect, no disconnect event.
fn assert_kept_connection(h: &mqtt_sessions::SessionHandle, log: &EventLog) {
    assert_eq!(h.metrics().reconnects, 0, "no reconnect");
    assert_eq!(
        log.count("bp", |d| matches!(
            d,
            mqtt_sessions::EventData::SessionDisconnected { .. }
        )),
        0,
        "no disconnect: {:?}",
        log.of("bp")
    );
}

/// Reads `l` until `n` messages arrived or nothing came for 3 s; returns the payloads.
async fn read_all(l: &mqtt_sessions::Listener, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(3), l.recv()).await {
            Ok(Some(m)) => got.push(m.payload_str().unwrap().to_string()),
            _ => break,
        }
    }
    got
}

#[actix_rt::test]
async fn a_backpressure_qos0_route_whose_consumer_stops_briefly_loses_and_drops_nothing() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    // max_stall: half of 4 s.
    let (h, l) = backpressure_route(
        &m,
        &broker.url(),
        Duration::from_secs(4),
        mqtt_sessions::QoS::AtMostOnce,
    )
    .await;
    // Published at QoS 1, received at the route's QoS 0.
    publish_many(broker.port(), "bp/x", 100, 1);
    // The consumer stops for 1 s (less than max_stall; load simulation): the session
    // stops reading meanwhile, and the broker holds the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = read_all(&l, 100).await;
    let s = l.route().stats();
    assert_eq!(got.len(), 100, "{s:?}");
    assert_eq!(
        got,
        (0..100).map(|i| i.to_string()).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!((s.dropped_full, s.dropped_stall), (0, 0));
    assert_eq!(h.metrics().reconnects, 0);
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_backpressure_qos0_route_stopped_for_three_keep_alives_keeps_the_connection_and_counts_stall_drops(
) {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let (h, l) = backpressure_route(
        &m,
        &broker.url(),
        Duration::from_secs(2),
        mqtt_sessions::QoS::AtMostOnce,
    )
    .await;
    publish_many(broker.port(), "bp/x", 100, 1);
    // The consumer stops for 3 × the keep-alive (load simulation).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = read_all(&l, 100).await;
    let s = l.route().stats();
    println!(
        "figure: stopped 6 s: {} delivered, {} dropped (stall)",
        got.len(),
        s.dropped_stall
    );
    assert!(s.dropped_stall > 0, "the stall ended in drops: {s:?}");
    assert_eq!(
        got.len() as u64 + s.dropped_stall,
        100,
        "each message delivered or counted: {s:?}"
    );
    assert_eq!(s.dropped_full, 0);
    assert_kept_connection(&h, &log);
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_qos1_route_stopped_for_three_keep_alives_keeps_the_connection_and_delivers_everything() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let (h, l) = backpressure_route(
        &m,
        &broker.url(),
        Duration::from_secs(2),
        mqtt_sessions::QoS::AtLeastOnce,
    )
    .await;
    publish_many(broker.port(), "bp/x", 100, 1);
    // The consumer stops for 3 × the keep-alive (load simulation, the subject of the test).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = read_all(&l, 100).await;
    assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_kept_connection(&h, &log);
    m.shutdown().await;
}

/// A consumer that batches — holds the messages it received, unacknowledged, until it has
/// a batch — must still get the next ones from a full `Backpressure` queue: the wait for
/// room of message k+1 never waits for message k to be handled.
#[actix_rt::test]
async fn a_qos1_consumer_holding_a_batch_keeps_receiving_from_a_full_backpressure_route() {
    init_tracing();
    // The broker may have all 100 in flight (its default is 20), so the batch of 30 is
    // bounded by the library alone.
    let broker = Mosquitto::start_with(MosquittoConfig::new().max_inflight_messages(100));
    let m = SessionManager::new().unwrap();
    let (h, l) = backpressure_route(
        &m,
        &broker.url(),
        Duration::from_secs(10),
        mqtt_sessions::QoS::AtLeastOnce,
    )
    .await;
    publish_many(broker.port(), "bp/x", 100, 1);
    // Every message has reached the session before the consumer starts: the route's queue
    // (capacity 10) is full and the other 90 wait for room.
    assert!(
        poll_until(T, || h.metrics().messages_received == 100),
        "{:?}",
        h.metrics()
    );
    let mut batch = Vec::new();
    while batch.len() < 30 {
        match tokio::time::timeout(Duration::from_secs(5), l.recv()).await {
            Ok(Some(msg)) => batch.push(msg),
            _ => panic!(
                "message {} did not come while the consumer held {} unhandled",
                batch.len(),
                batch.len()
            ),
        }
    }
    drop(batch);
    let rest = read_all(&l, 70).await;
    assert_eq!(rest, (30..100).map(|i| i.to_string()).collect::<Vec<_>>());
    m.shutdown().await;
}

#[actix_rt::test]
async fn direct_subscriptions_and_routes_share_one_reference_counted_subscription() {
    use mqtt_sessions::QoS;
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let h = m.add_session(fast_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let route = m
        .route("shared/#")
        .session("s")
        .qos(QoS::AtLeastOnce)
        .listen()
        .await
        .unwrap();

    // A direct QoS 0 subscription does not lower the route's QoS 1.
    h.subscribe("shared/#", QoS::AtMostOnce).await.unwrap();
    publish_many(broker.port(), "shared/a", 1, 1);
    let a = recv_one(&route).await;
    assert_eq!(a.qos, QoS::AtLeastOnce, "still subscribed at QoS 1");

    // A direct unsubscribe does not end the route's subscription.
    h.unsubscribe("shared/#").await.unwrap();
    publish_many(broker.port(), "shared/b", 1, 1);
    assert_eq!(recv_one(&route).await.topic.as_ref(), "shared/b");

    // Removing the route keeps a direct subscription.
    h.subscribe("shared/#", QoS::AtLeastOnce).await.unwrap();
    let direct = h.messages();
    drop(route);
    // A round trip through the router, after the route's removal.
    let _other = m.listen_to("s", "other/#").await.unwrap();
    publish_many(broker.port(), "shared/c", 1, 1);
    let c = tokio::time::timeout(T, direct.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.topic.as_ref(), "shared/c");
    assert_eq!(h.status().subscriptions, 2, "shared/# and other/#");
    m.shutdown().await;
}

async fn recv_one(l: &mqtt_sessions::Listener) -> mqtt_sessions::Message {
    tokio::time::timeout(T, l.recv()).await.unwrap().unwrap()
}
