//! Metrics against a real mosquitto: the Prometheus exposition over real HTTP, promtool,
//! readiness and session reports through broker faults, series of removed sessions, the
//! plain-number snapshots and the Grafana dashboard.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mqtt_sessions::metrics::metric_names;
use mqtt_sessions::Publish;
use mqtt_sessions::{QoS, RouteStatsSnapshot, SessionManager, SessionState};

const T: Duration = Duration::from_secs(15);

/// A route source standing in for the router: one route with figures in every field.
fn one_route() -> Arc<dyn mqtt_sessions::RouteStatsSource> {
    Arc::new(|| {
        vec![RouteStatsSnapshot {
            name: "sensors".into(),
            delivered: 7,
            dropped_full: 2,
            dropped_panic: 1,
            dropped_stall: 3,
            dropped_closed: 4,
            last_message_timestamp_seconds: Some(1_700_000_000.5),
        }]
    })
}

/// Publishes `n` QoS 1 messages `"0"`.. with `mosquitto_pub`, off the test's thread (the
/// session runs on it).
async fn mosquitto_pub_many(port: u16, topic: &'static str, n: usize) {
    tokio::task::spawn_blocking(move || publish_many(port, topic, n, 1))
        .await
        .unwrap();
}

/// Polls `/metrics` until `name{session}` equals `want`; returns the last exposition.
async fn scrape_until(http: &HttpEndpoint, name: &str, session: &str, want: f64) -> Exposition {
    let deadline = Instant::now() + T;
    loop {
        let e = http.scrape().await;
        if e.value(name, &[("session", session)]) == Some(want) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{session={session:?}}} never reached {want}; last exposition:\n{}",
            e.text
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A manager with one session that received and sent messages, and one route, so that
/// every metric family has samples.
async fn busy_manager(broker: &Mosquitto) -> (SessionManager, HttpEndpoint) {
    let m = SessionManager::builder()
        .route_stats_source(one_route())
        .build()
        .unwrap();
    let http = HttpEndpoint::start(&m);
    let h = m
        .add_session(fast_opts("busy", &broker.url()))
        .await
        .unwrap();
    h.subscribe("in/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("busy", T).await.unwrap();
    mosquitto_pub_many(broker.port(), "in/x", 5).await;
    for i in 0..3 {
        h.publish(Publish::new("out/x", format!("m{i}")).qos(QoS::AtLeastOnce))
            .await
            .unwrap();
    }
    scrape_until(&http, "mqtt_sessions_messages_received_total", "busy", 5.0).await;
    (m, http)
}

#[actix_rt::test]
async fn scraped_counters_equal_the_messages_received_and_sent_during_real_traffic() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let http = HttpEndpoint::start(&m);
    let h = m.add_session(fast_opts("s1", &broker.url())).await.unwrap();
    h.subscribe("in/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("s1", T).await.unwrap();
    let sub = Sub::spawn(broker.port(), "out/#", 1);
    assert!(sub.wait_ready(T));

    const N: usize = 50; // into the session, from mosquitto_pub
    const M: usize = 20; // out through the session
    let incoming = actix_rt::spawn(mosquitto_pub_many(broker.port(), "in/x", N));
    for i in 0..M {
        h.publish(Publish::new("out/x", format!("out-{i:02}")).qos(QoS::AtLeastOnce))
            .await
            .unwrap();
    }
    incoming.await.unwrap();
    assert!(sub.wait_for_count_async(M, T).await, "{:?}", sub.lines());

    let e = scrape_until(
        &http,
        "mqtt_sessions_messages_received_total",
        "s1",
        N as f64,
    )
    .await;
    let s1 = [("session", "s1")];
    assert_eq!(
        e.value("mqtt_sessions_messages_sent_total", &s1),
        Some(M as f64)
    );
    // Payloads "0".."49": 10 of one byte, 40 of two; "out-00".."out-19": 6 bytes each.
    assert_eq!(
        e.value("mqtt_sessions_received_bytes_total", &s1),
        Some(90.0)
    );
    assert_eq!(
        e.value("mqtt_sessions_sent_bytes_total", &s1),
        Some((6 * M) as f64)
    );
    assert_eq!(
        e.value("mqtt_sessions_publish_ack_latency_seconds_count", &s1),
        Some(M as f64),
        "one latency observation per acknowledged QoS 1 publish"
    );
    assert_eq!(e.value("mqtt_sessions_session_up", &s1), Some(1.0));
    assert_eq!(e.value("mqtt_sessions_session_ready", &s1), Some(1.0));
    assert_eq!(e.value("mqtt_sessions_session_state", &s1), Some(2.0));
    assert_eq!(
        e.value("mqtt_sessions_sessions", &[("state", "connected")]),
        Some(1.0)
    );
    assert_eq!(
        e.value("mqtt_sessions_sessions", &[("state", "reconnecting")]),
        Some(0.0)
    );
    assert_eq!(e.value("mqtt_sessions_pending_messages", &s1), Some(0.0));
    let snap = m.metrics();
    assert_eq!(
        (snap.messages_received, snap.messages_sent),
        (N as u64, M as u64),
        "the snapshot agrees with the exposition"
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn the_exposition_passes_promtool_check_metrics() {
    init_tracing();
    let broker = Mosquitto::start();
    let (m, http) = busy_manager(&broker).await;
    let e = http.scrape().await;
    let out = promtool_check_metrics(&e.text);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\nexposition:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        e.text
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn every_metric_family_appears_in_the_exposition_of_a_busy_manager() {
    init_tracing();
    let broker = Mosquitto::start();
    let (m, http) = busy_manager(&broker).await;
    let e = http.scrape().await;
    for name in metric_names("mqtt_sessions") {
        assert!(
            e.text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{}",
            e.text
        );
    }
    assert_eq!(
        e.value(
            "mqtt_sessions_route_dropped_total",
            &[("route", "sensors"), ("reason", "full")]
        ),
        Some(2.0)
    );
    for (reason, n) in [("panic", 1.0), ("stall", 3.0), ("closed", 4.0)] {
        assert_eq!(
            e.value(
                "mqtt_sessions_route_dropped_total",
                &[("route", "sensors"), ("reason", reason)]
            ),
            Some(n),
            "{reason}"
        );
    }
    assert_eq!(
        e.value(
            "mqtt_sessions_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn readyz_is_503_naming_the_session_while_the_broker_is_down_and_200_after_restart() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let http = HttpEndpoint::start(&m);
    m.add_session(fast_opts("fragile", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("fragile", T).await.unwrap();
    let r = http.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(http.get("/healthz").await.status, 200);

    broker.kill9();
    let deadline = Instant::now() + T;
    let body = loop {
        let r = http.get("/readyz").await;
        if r.status == 503 {
            break r.json();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {}: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let not_ready = body["not_ready"].as_array().unwrap();
    assert_eq!(not_ready.len(), 1, "{body}");
    assert_eq!(not_ready[0]["name"], "fragile");
    assert_ne!(not_ready[0]["state"], "connected");
    assert!(not_ready[0]["last_error"]["kind"].is_string(), "{body}");

    let sessions = http.get("/sessions").await.json();
    let s = &sessions[0];
    assert_eq!(s["name"], "fragile");
    assert_eq!(s["ready"], false);
    assert_ne!(s["state"], "connected");
    assert!(s["broker"].is_null(), "{s}");
    assert_eq!(
        http.get("/healthz").await.status,
        200,
        "the manager still runs"
    );

    broker.restart();
    let back = poll_until_async(T, || {
        let fut = http.get("/readyz");
        async move { fut.await.status == 200 }
    })
    .await;
    assert!(
        back,
        "/readyz did not return to 200 after the broker restarted"
    );
    let sessions = http.get("/sessions").await.json();
    let s = &sessions[0];
    assert_eq!(
        (&s["state"], &s["ready"]),
        (&"connected".into(), &true.into()),
        "{s}"
    );
    assert_eq!(s["broker"], broker.url());
    assert_eq!(s["metrics"]["reconnects"], 1);
    assert!(
        s["metrics"]["connection_errors"].as_u64().unwrap() >= 1,
        "{s}"
    );

    m.shutdown().await;
    assert_eq!(http.get("/healthz").await.status, 503, "after shutdown");
}

#[actix_rt::test]
async fn removing_a_session_removes_its_series_from_metrics() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let http = HttpEndpoint::start(&m);
    for name in ["stays", "goes"] {
        m.add_session(fast_opts(name, &broker.url())).await.unwrap();
        m.wait_for_session(name, T).await.unwrap();
    }
    m.publish("goes", Publish::new("t/x", "bye").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let before = http.scrape().await;
    assert!(before.mentions_session("goes"));
    assert_eq!(
        before.value("mqtt_sessions_sessions", &[("state", "connected")]),
        Some(2.0)
    );

    m.remove_session("goes").await.unwrap();
    let after = http.scrape().await;
    assert!(
        !after.mentions_session("goes"),
        "series of the removed session remain:\n{}",
        after.text
    );
    assert!(after.mentions_session("stays"));
    assert_eq!(
        after.value("mqtt_sessions_sessions", &[("state", "connected")]),
        Some(1.0)
    );
    assert!(!m.metrics().per_session.contains_key("goes"));
    m.shutdown().await;
}

fn assert_numeric_leaves(path: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Number(_) => {}
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                assert_numeric_leaves(&format!("{path}.{k}"), v);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                assert_numeric_leaves(&format!("{path}[{i}]"), v);
            }
        }
        other => panic!("{path} is not a number: {other}"),
    }
}

#[actix_rt::test]
async fn metric_snapshots_serialise_to_json_with_numbers_only() {
    init_tracing();
    let broker = Mosquitto::start();
    let (m, _http) = busy_manager(&broker).await;
    // A second session that never connects: optional figures absent, state not connected.
    m.add_session(fast_opts("idle", "mqtt://127.0.0.1:1"))
        .await
        .unwrap();
    let snap = m.metrics();
    assert_eq!(snap.sessions, 2);
    assert_eq!(snap.messages_received, 5);
    assert_eq!(snap.messages_sent, 3);
    assert!(snap.routes.contains_key("sensors"));
    let busy = &snap.per_session["busy"];
    assert_eq!(busy.state, SessionState::Connected.code());
    assert!(busy.messages_received_per_second > 0.0, "{busy:?}");
    assert!(busy.last_message_timestamp_seconds.is_some());
    assert_eq!(busy.publish_acks, 3);

    let json = serde_json::to_value(&snap).unwrap();
    assert_numeric_leaves("ManagerMetrics", &json);
    let json = serde_json::to_value(m.session("idle").unwrap().metrics()).unwrap();
    assert_numeric_leaves("SessionMetrics", &json);
    m.shutdown().await;
}

/// Identifiers starting with `prefix` in a PromQL expression.
fn metric_identifiers(expr: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(prefix) {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every PromQL string of a Grafana dashboard: panel target `expr`s and variable queries.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// Gauges only the daemon exports (over its sessions' `required_for_ready`).
const DAEMON_FLEET_GAUGES: [&str; 2] = [
    "mqtt_sessions_required_sessions",
    "mqtt_sessions_pending_fill_ratio_max",
];

#[actix_rt::test]
async fn the_grafana_dashboard_queries_only_metrics_the_exposition_has() {
    init_tracing();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| metric_identifiers(q, "mqtt_sessions_"))
        // The daemon's own metrics (forwarding rules, reloads, its fleet gauges):
        // daemon/tests/dashboard.rs runs every query against a daemon.
        .filter(|n| {
            !n.starts_with("mqtt_sessions_forward_")
                && !n.starts_with("mqtt_sessions_config_")
                && !DAEMON_FLEET_GAUGES.contains(&n.as_str())
        })
        .collect();
    assert!(
        used.len() >= 15,
        "the dashboard queries too little: {used:?}"
    );

    let broker = Mosquitto::start();
    let (m, http) = busy_manager(&broker).await;
    let exposed = http.scrape().await.sample_names();
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that do not exist: {missing:?}\nexposed: {exposed:?}"
    );
    m.shutdown().await;
}

#[test]
fn metric_identifiers_finds_prefixed_names_and_histogram_suffixes() {
    assert_eq!(
        metric_identifiers(
            "histogram_quantile(0.5, sum by (le) (rate(mqtt_sessions_x_bucket{a=\"b\"}[5m]))) / my_mqtt_sessions_y",
            "mqtt_sessions_"
        ),
        vec!["mqtt_sessions_x_bucket"]
    );
}
