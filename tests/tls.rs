//! Transport and security against real brokers: TLS (server-authenticated and mutual),
//! certificate failures with their backoff, `server_name`, `skip_verify`, WebSockets,
//! username/password, and the password never leaking into logs or status.
//!
//! Certificates are made at test time with rcgen ([`TestPki`]); mosquitto gets an extra
//! TLS listener next to the harness's plain one, so `mosquitto_sub` can watch on the plain
//! port what the session sends over TLS.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
#![allow(clippy::print_stdout, reason = "tests explain which broker they use")]

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use mqtt_sessions::{
    ErrorKind, EventData, Message, OptionsError, Publish, QoS, SessionManager, SessionOptions,
    TlsOptions,
};

const T: Duration = Duration::from_secs(15);

/// A mosquitto with a TLS listener (port returned) using `server`'s certificate.
fn tls_broker(pki: &TestPki, server: &CertFiles, require_certificate: bool) -> (Mosquitto, u16) {
    tls_broker_with(pki, server, require_certificate, MosquittoConfig::new())
}

fn tls_broker_with(
    pki: &TestPki,
    server: &CertFiles,
    require_certificate: bool,
    config: MosquittoConfig,
) -> (Mosquitto, u16) {
    let port = free_port();
    let broker = Mosquitto::start_with(config.extra(&tls_listener(
        port,
        &pki.ca_file,
        server,
        require_certificate,
    )));
    (broker, port)
}

fn tls_opts(name: &str, url: &str, tls: TlsOptions) -> SessionOptions {
    let mut o = fast_opts(name, url);
    o.tls = Some(tls);
    o
}

fn trusting(ca: &std::path::Path) -> TlsOptions {
    TlsOptions::new().ca_file(ca.to_path_buf())
}

/// Backoff without jitter: 100 ms, 200 ms, 400 ms, ... up to 2 s.
fn deterministic_backoff(o: &mut SessionOptions) {
    o.reconnect.initial_delay = Duration::from_millis(100);
    o.reconnect.max_delay = Duration::from_secs(2);
    o.reconnect.factor = 2.0;
    o.reconnect.jitter = 0.0;
}

fn failure_of(d: &EventData) -> Option<&mqtt_sessions::ConnectionFailure> {
    match d {
        EventData::SessionDisconnected { error: Some(f) } => Some(f),
        _ => None,
    }
}

/// Waits for `n` failed attempts of `session`, checks they all are of `kind` with a
/// message containing `needle`, and that the session backs off between them (growing
/// delays, one attempt per wait: no hot loop). Returns the first failure's message.
async fn assert_fails_and_backs_off(
    log: &EventLog,
    session: &str,
    kind: ErrorKind,
    needle: &str,
) -> String {
    let waiting = |d: &EventData| matches!(d, EventData::SessionReconnecting { .. });
    assert!(
        log.wait_count(session, 3, T, waiting).await,
        "{session}: fewer than 3 session_reconnecting events: {:#?}",
        log.of(session)
    );
    let events = log.of(session);
    let failures: Vec<_> = events.iter().filter_map(failure_of).collect();
    assert!(!failures.is_empty(), "{session}: no failure reported");
    for f in &failures {
        assert_eq!(f.kind, kind, "{session}: {f}");
        assert!(
            f.message.contains(needle),
            "{session}: message {:?} lacks {needle:?}",
            f.message
        );
    }
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|d| match d {
            EventData::SessionReconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(
        delays.windows(2).take(2).all(|w| w[1] > w[0]),
        "{session}: delays do not grow: {delays:?}"
    );
    let attempts = events
        .iter()
        .filter(|d| matches!(d, EventData::SessionConnecting { .. }))
        .count();
    assert!(
        attempts <= delays.len() + 1,
        "{session}: {attempts} attempts for {} waits (hot loop)",
        delays.len()
    );
    failures[0].message.clone()
}

async fn recv(rx: &mqtt_sessions::Listener) -> Message {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("no message in time")
        .expect("message channel closed")
}

#[actix_rt::test]
async fn server_authenticated_tls_connects_and_routes_messages_both_ways() {
    init_tracing();
    let pki = TestPki::new("routes");
    let server = pki.server("server", &["127.0.0.1", "localhost"]);
    let (broker, tls_port) = tls_broker(&pki, &server, false);
    let m = SessionManager::new().unwrap();
    for (name, scheme) in [("mqtts", "mqtts"), ("ssl", "ssl"), ("tls", "tls")] {
        let url = format!("{scheme}://127.0.0.1:{tls_port}");
        let h = m
            .add_session(tls_opts(name, &url, trusting(&pki.ca_file)))
            .await
            .unwrap();
        h.wait_ready(T)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}: {:?}", h.status().last_error));
        assert_eq!(h.status().broker.as_deref(), Some(url.as_str()));
        assert!(!h.status().tls_skip_verify);
    }
    let h = m.session("mqtts").unwrap();
    let rx = h.messages();
    h.subscribe("in/#", QoS::AtLeastOnce).await.unwrap();

    // In: an independent client publishes over TLS, verifying the broker with the CA.
    let ca = pki.ca_file.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        mosquitto_pub(
            tls_port,
            &[
                "--cafile",
                &ca,
                "--insecure",
                "-t",
                "in/1",
                "-m",
                "over-tls",
                "-q",
                "1",
            ],
            None,
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = recv(&rx).await;
    assert_eq!(
        (&*msg.topic, msg.payload_str().ok()),
        ("in/1", Some("over-tls"))
    );

    // Out: the session publishes over TLS; a plain subscriber sees it.
    let sub = Sub::spawn(broker.port(), "out/#", 1);
    h.publish(Publish::new("out/1", "from-session").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert!(sub.wait_for_count(1, T), "{:?}", sub.lines());
    assert_eq!(sub.payloads(), vec!["from-session".to_string()]);
    m.shutdown().await;
}

#[actix_rt::test]
async fn mutual_tls_session_with_client_certificate_connects_and_one_without_is_refused_with_kind_tls(
) {
    init_tracing();
    let pki = TestPki::new("mtls");
    let server = pki.server("server", &["127.0.0.1"]);
    let client = pki.client("client", "device-1");
    let (_broker, tls_port) = tls_broker(&pki, &server, true);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);

    let with_cert = trusting(&pki.ca_file)
        .client_cert(client.cert.clone())
        .client_key(client.key.clone());
    let h = m
        .add_session(tls_opts("with-cert", &url, with_cert))
        .await
        .unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));

    let mut o = tls_opts("without-cert", &url, trusting(&pki.ca_file));
    deterministic_backoff(&mut o);
    let without = m.add_session(o).await.unwrap();
    let message =
        assert_fails_and_backs_off(&log, "without-cert", ErrorKind::Tls, "TLS handshake failed")
            .await;
    assert!(message.contains("client certificate"), "{message}");
    assert!(!without.is_ready());
    assert_eq!(
        without.status().last_error.map(|f| f.kind),
        Some(ErrorKind::Tls)
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn wrong_ca_fails_with_kind_tls_and_backs_off() {
    init_tracing();
    let pki = TestPki::new("right");
    let other = TestPki::new("other");
    let server = pki.server("server", &["127.0.0.1"]);
    let (_broker, tls_port) = tls_broker(&pki, &server, false);
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = tls_opts(
        "wrong-ca",
        &format!("mqtts://127.0.0.1:{tls_port}"),
        trusting(&other.ca_file),
    );
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    let message =
        assert_fails_and_backs_off(&log, "wrong-ca", ErrorKind::Tls, "UnknownIssuer").await;
    assert!(message.starts_with("TLS handshake failed"), "{message}");
    assert!(message.contains("tls.ca_file"), "{message}");
    m.shutdown().await;
}

#[actix_rt::test]
async fn host_name_mismatch_fails_with_kind_tls_and_server_name_fixes_it() {
    init_tracing();
    let pki = TestPki::new("names");
    let server = pki.server("server", &["broker.test"]);
    let (_broker, tls_port) = tls_broker(&pki, &server, false);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);

    let mut o = tls_opts("mismatch", &url, trusting(&pki.ca_file));
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    let message =
        assert_fails_and_backs_off(&log, "mismatch", ErrorKind::Tls, "not valid for name").await;
    assert!(message.contains("tls.server_name"), "{message}");

    let fixed = trusting(&pki.ca_file).server_name("broker.test");
    let h = m.add_session(tls_opts("fixed", &url, fixed)).await.unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));
    m.shutdown().await;
}

#[actix_rt::test]
async fn expired_server_certificate_fails_with_kind_tls() {
    init_tracing();
    let pki = TestPki::new("expired");
    let server = pki.expired_server("server", &["127.0.0.1"]);
    let (_broker, tls_port) = tls_broker(&pki, &server, false);
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = tls_opts(
        "expired",
        &format!("mqtts://127.0.0.1:{tls_port}"),
        trusting(&pki.ca_file),
    );
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    let message = assert_fails_and_backs_off(&log, "expired", ErrorKind::Tls, "expired").await;
    assert!(message.starts_with("TLS handshake failed"), "{message}");
    m.shutdown().await;
}

/// `skip_verify` connects to a broker whose certificate is self-signed for another name,
/// says so in the status, and logs a warning. The session runs on a worker arbiter, so the
/// warning is looked for in a child process whose global subscriber sees every thread.
#[actix_rt::test]
async fn skip_verify_connects_to_a_self_signed_broker_warns_and_shows_in_status() {
    let pki = TestPki::new("selfsigned");
    let server = pki.self_signed_server("server", &["somewhere.else"]);
    let (_broker, tls_port) = tls_broker(&pki, &server, false);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let dir = tempfile::tempdir().unwrap();
    let child = ChildProc::spawn(CHILD, "skipverify", dir.path(), &url);
    assert!(
        child.wait_line("ready ", 1).await,
        "{:?}",
        child.lines.lock().unwrap()
    );
    assert_eq!(
        child.lines_with("ready ")[0].trim(),
        "true",
        "status tls_skip_verify"
    );
    let logs = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
    assert!(
        logs.contains("TLS certificate verification is disabled") && logs.contains("WARN"),
        "no warning logged:\n{logs}"
    );
    drop(child);

    // In this process: the status JSON says so, and the same broker is refused when
    // verification is on (its certificate is self-signed).
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(tls_opts("skip", &url, TlsOptions::new().skip_verify(true)))
        .await
        .unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));
    let json = serde_json::to_value(h.status()).unwrap();
    assert_eq!(json["tls_skip_verify"], serde_json::Value::Bool(true));
    let log = EventLog::start(&m);
    let mut o = tls_opts("verify", &url, trusting(&pki.ca_file));
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    assert!(
        log.wait_count("verify", 1, T, |d| failure_of(d)
            .is_some_and(|f| f.kind == ErrorKind::Tls))
            .await
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn missing_tls_files_are_refused_when_the_session_is_added() {
    init_tracing();
    let m = SessionManager::new().unwrap();
    let err = m
        .add_session(tls_opts(
            "nofile",
            "mqtts://127.0.0.1:1",
            trusting(std::path::Path::new("/nonexistent/ca.pem")),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, mqtt_sessions::Error::Options(OptionsError::Tls { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    assert!(m.list_sessions().is_empty());
    m.shutdown().await;
}

/// Starts rumqttd (in-process, its own threads) with only a WebSocket listener on a free
/// port; returns the port once it accepts connections.
fn start_rumqttd_ws() -> u16 {
    start_rumqttd_ws_with(None)
}

/// [`start_rumqttd_ws`], with TLS (`wss://`) on that listener when `tls` is given.
fn start_rumqttd_ws_with(tls: Option<&CertFiles>) -> u16 {
    let port = free_port();
    let mut ws = serde_json::json!({
        "name": "ws-1",
        "listen": format!("127.0.0.1:{port}"),
        "next_connection_delay_ms": 1,
        "connections": {
            "connection_timeout_ms": 60000,
            "max_payload_size": 20480,
            "max_inflight_count": 100,
            "dynamic_filters": true,
        },
    });
    if let Some(files) = tls {
        ws["tls"] = serde_json::json!({
            "certpath": files.cert.display().to_string(),
            "keypath": files.key.display().to_string(),
        });
    }
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 100,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 1_048_576,
            "max_segment_count": 10,
        },
        "ws": { "1": ws },
    }))
    .unwrap();
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                println!("rumqttd stopped: {e}");
            }
        })
        .unwrap();
    assert!(
        poll_until(BROKER_TIMEOUT, || TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "rumqttd did not listen on {port}"
    );
    port
}

/// Two sessions on `url`: one subscribes, the other publishes; the message arrives.
async fn assert_routes_over(url: &str) {
    let m = SessionManager::new().unwrap();
    let sub = m.add_session(fast_opts("ws-sub", url)).await.unwrap();
    let publ = m.add_session(fast_opts("ws-pub", url)).await.unwrap();
    let rx = sub.messages();
    sub.subscribe("ws/#", QoS::AtLeastOnce).await.unwrap();
    for h in [&sub, &publ] {
        h.wait_ready(T)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}: {:?}", h.status().last_error));
        assert_eq!(h.status().broker.as_deref(), Some(url));
    }
    publ.publish(Publish::new("ws/hello", "over-websocket").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let msg = recv(&rx).await;
    assert_eq!(
        (&*msg.topic, msg.payload_str().ok()),
        ("ws/hello", Some("over-websocket"))
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn ws_url_routes_messages_through_rumqttd() {
    init_tracing();
    let port = start_rumqttd_ws();
    assert_routes_over(&format!("ws://127.0.0.1:{port}/mqtt")).await;
}

/// `wss://` against a real broker, never skipped: Debian's mosquitto 2.0.11 cannot open a
/// WebSocket listener, so this runs against rumqttd's TLS WebSocket listener (rumqttd is a
/// dev-dependency built with `use-rustls`), with a certificate from the test CA. A session
/// subscribes and publishes over it; a second session that does not trust the CA is
/// refused with kind `Tls`, so the connection really was TLS.
#[actix_rt::test]
async fn wss_url_routes_messages_through_rumqttds_tls_websocket_listener() {
    init_tracing();
    let pki = TestPki::new("wss");
    let server = pki.server("server", &["127.0.0.1"]);
    let port = start_rumqttd_ws_with(Some(&server));
    let url = format!("wss://127.0.0.1:{port}/mqtt");
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m
        .add_session(tls_opts("wss", &url, trusting(&pki.ca_file)))
        .await
        .unwrap();
    let rx = h.messages();
    h.subscribe("wss/#", QoS::AtLeastOnce).await.unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}: {:?}", h.status().last_error));
    assert_eq!(h.status().broker.as_deref(), Some(url.as_str()));
    h.publish(Publish::new("wss/echo", "over-wss").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let msg = recv(&rx).await;
    assert_eq!(
        (&*msg.topic, msg.payload_str().ok()),
        ("wss/echo", Some("over-wss"))
    );

    // Without the CA the same URL fails the TLS handshake: the transport was TLS.
    let other = TestPki::new("wss-other");
    let mut o = tls_opts("wss-untrusted", &url, trusting(&other.ca_file));
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    assert!(
        log.wait_count("wss-untrusted", 1, T, |d| failure_of(d)
            .is_some_and(|f| f.kind == ErrorKind::Tls))
            .await,
        "{:?}",
        log.of("wss-untrusted")
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn right_credentials_connect_and_wrong_ones_are_refused_with_kind_auth_and_back_off() {
    init_tracing();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("u", "p"),
    );
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let good = m
        .add_session(fast_opts("good", &broker.url()).credentials("u", "p"))
        .await
        .unwrap();
    good.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", good.status().last_error));

    let mut o = fast_opts("bad", &broker.url()).credentials("u", "wrong");
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    let message = assert_fails_and_backs_off(&log, "bad", ErrorKind::Auth, "refused").await;
    assert!(message.contains("username and password"), "{message}");

    let mut o = fast_opts("anonymous", &broker.url());
    deterministic_backoff(&mut o);
    m.add_session(o).await.unwrap();
    assert_fails_and_backs_off(&log, "anonymous", ErrorKind::Auth, "refused").await;
    m.shutdown().await;
}

const GOOD: &str = "g00d-Pa55word-7f3a";
const BAD: &str = "wr0ng-Pa55word-91c2";

/// Environment variable that turns [`child_process`] into the secrets child: its value is
/// `"secrets {log dir} {plain url} {tls url} {ca file}"`.
const CHILD: &str = "MQTT_SESSIONS_TLS_SECRETS_CHILD";

/// The child process of [`password_never_reaches_logs_debug_output_status_json_or_http`]
/// (run by it with [`CHILD`] set). A global `trace` subscriber (every thread: the
/// worker arbiters, the store worker, rumqttc through `tracing-log`) writes into
/// `{dir}/log.txt`; three sessions (plain, TLS, wrong password) run; every `Debug`/JSON
/// form of their options, handles, status and events goes to `{dir}/outputs.txt`; then
/// the child prints `http ADDR` (its HTTP endpoints) and waits to be killed.
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    let spec = child_spec(CHILD);
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let dir = std::path::PathBuf::from(parts[1]);
    let file = std::fs::File::create(dir.join("log.txt")).unwrap();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_thread_names(true)
        .with_writer(Mutex::new(file))
        .try_init()
        .unwrap();
    if parts[0] == "skipverify" {
        let m = SessionManager::new().unwrap();
        let o = tls_opts("skip", parts[2], TlsOptions::new().skip_verify(true));
        let h = m.add_session(o).await.unwrap();
        h.wait_ready(T)
            .await
            .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));
        println!("ready {}", h.status().tls_skip_verify);
        std::future::pending::<()>().await;
    }
    let (plain_url, tls_url, ca) = (parts[2], parts[3], parts[4]);
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let plain_opts = fast_opts("plain", plain_url).credentials("user", GOOD);
    let tls =
        tls_opts("tls", tls_url, trusting(std::path::Path::new(ca))).credentials("user", GOOD);
    let mut wrong = fast_opts("wrong", plain_url).credentials("user", BAD);
    deterministic_backoff(&mut wrong);
    let mut handles = Vec::new();
    for o in [plain_opts.clone(), tls.clone(), wrong.clone()] {
        handles.push(m.add_session(o).await.unwrap());
    }
    for h in &handles[..2] {
        h.subscribe("s/#", QoS::AtLeastOnce).await.unwrap();
        h.wait_ready(T)
            .await
            .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));
        h.publish(Publish::new("s/x", "payload").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
    }
    assert!(
        log.wait_count("wrong", 2, T, |d| failure_of(d)
            .is_some_and(|f| f.kind == ErrorKind::Auth))
            .await
    );
    let mut seen = Vec::new();
    for o in [&plain_opts, &tls, &wrong] {
        seen.push(format!("{o:?}"));
        seen.push(format!("{o:#?}"));
        seen.push(serde_json::to_string(o).unwrap());
    }
    for h in &handles {
        seen.push(format!("{h:?}"));
        seen.push(format!("{:?}", h.status()));
        seen.push(serde_json::to_string(&h.status()).unwrap());
        seen.push(format!("{:?}", h.options()));
    }
    seen.push(format!("{m:?}"));
    seen.push(format!("{:?}", log.all()));
    seen.push(serde_json::to_string(&log.all()).unwrap());
    std::fs::write(dir.join("outputs.txt"), seen.join("\n")).unwrap();
    let http = HttpEndpoint::start(&m);
    println!("http {}", http.addr);
    std::future::pending::<()>().await;
}

/// The password (right and wrong) never appears in anything the process writes: a global
/// `trace` subscriber in a child process of its own captures the log lines of every
/// thread, and the child's `/sessions` and `/metrics` are read over HTTP, besides every
/// `Debug` and JSON form of options, handles, status and events.
#[actix_rt::test]
async fn password_never_reaches_logs_debug_output_status_json_or_http() {
    let pki = TestPki::new("secrets");
    let server = pki.server("server", &["127.0.0.1"]);
    let (broker, tls_port) = tls_broker_with(
        &pki,
        &server,
        false,
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("user", GOOD),
    );
    let dir = tempfile::tempdir().unwrap();
    let urls = format!(
        "{} mqtts://127.0.0.1:{tls_port} {}",
        broker.url(),
        pki.ca_file.display()
    );
    let child = ChildProc::spawn(CHILD, "secrets", dir.path(), &urls);
    assert!(
        child.wait_line("http ", 1).await,
        "the child did not start its HTTP endpoint: {:?}",
        child.lines.lock().unwrap()
    );
    let addr: std::net::SocketAddr = child.lines_with("http ")[0].trim().parse().unwrap();
    let sessions = http_get(addr, "/sessions").await;
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    for name in ["plain", "tls", "wrong"] {
        assert!(sessions.body.contains(name), "{}", sessions.body);
    }
    let metrics = http_get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let logs = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
    let outputs = std::fs::read_to_string(dir.path().join("outputs.txt")).unwrap();
    for (what, text) in [
        ("the logs", &logs),
        ("Debug/JSON output", &outputs),
        ("GET /sessions", &sessions.body),
        ("GET /metrics", &metrics.body),
    ] {
        for secret in [GOOD, BAD] {
            if let Some(i) = text.find(secret) {
                let line = text[..i].rsplit('\n').next().unwrap_or("");
                panic!("password leaked in {what}: …{line}{secret}…");
            }
        }
    }
    // The capture really was global, at trace level, and saw the sessions' work on other
    // threads than the test's.
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "{logs}");
    assert!(logs.contains("session ready"), "{logs}");
    assert!(logs.contains("wrong"), "{logs}");
    let threads: BTreeSet<&str> = logs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(
        threads.len() >= 2,
        "log lines from one thread only: {threads:?}"
    );
    println!(
        "{} log lines from threads {threads:?}",
        logs.lines().count()
    );
}
