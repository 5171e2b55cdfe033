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

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
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
    TlsOptions {
        ca_file: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    }
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

async fn recv(rx: &mut mqtt_sessions::SessionMessages) -> Message {
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
    let mut rx = h.messages();
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
    let msg = recv(&mut rx).await;
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

    let with_cert = TlsOptions {
        client_cert: Some(client.cert.clone()),
        client_key: Some(client.key.clone()),
        ..trusting(&pki.ca_file)
    };
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

    let fixed = TlsOptions {
        server_name: Some("broker.test".into()),
        ..trusting(&pki.ca_file)
    };
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

/// Collects what a `tracing_subscriber` writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// A subscriber at `trace` writing into a buffer, for this thread only (the session's
/// actor and driver run on the test's thread).
fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buf = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[actix_rt::test]
async fn skip_verify_connects_to_a_self_signed_broker_warns_and_shows_in_status() {
    let (logs, _guard) = capture_logs();
    let pki = TestPki::new("selfsigned");
    let server = pki.self_signed_server("server", &["somewhere.else"]);
    let (_broker, tls_port) = tls_broker(&pki, &server, false);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let m = SessionManager::new().unwrap();

    let h = m
        .add_session(tls_opts(
            "skip",
            &url,
            TlsOptions {
                skip_verify: true,
                ..TlsOptions::default()
            },
        ))
        .await
        .unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", h.status().last_error));
    assert!(h.status().tls_skip_verify);
    let json = serde_json::to_value(h.status()).unwrap();
    assert_eq!(json["tls_skip_verify"], serde_json::Value::Bool(true));
    assert!(
        logs.text()
            .contains("TLS certificate verification is disabled"),
        "no warning logged:\n{}",
        logs.text()
    );

    // The same broker is refused when verification is on (its certificate is self-signed).
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
    let port = free_port();
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 100,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 1_048_576,
            "max_segment_count": 10,
        },
        "ws": {
            "1": {
                "name": "ws-1",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 20480,
                    "max_inflight_count": 100,
                    "dynamic_filters": true,
                },
            },
        },
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

/// A mosquitto with a WebSocket listener, or `None` (printed) if this mosquitto cannot
/// start one (Debian's 2.0.11 may lack WebSocket support).
fn mosquitto_ws() -> Option<(Mosquitto, u16)> {
    let port = free_port();
    let started = std::panic::catch_unwind(|| {
        Mosquitto::start_with(
            MosquittoConfig::new()
                .extra(&format!("listener {port} 127.0.0.1\nprotocol websockets")),
        )
    });
    match started {
        Ok(broker) if broker.log().contains("Opening websockets listen socket") => {
            Some((broker, port))
        }
        _ => {
            println!(
                "NOTE: this mosquitto cannot start a websockets listener \
                 (\"Unable to start any listening sockets\"); ws:// is covered against rumqttd"
            );
            None
        }
    }
}

/// Two sessions on `url`: one subscribes, the other publishes; the message arrives.
async fn assert_routes_over(url: &str) {
    let m = SessionManager::new().unwrap();
    let sub = m.add_session(fast_opts("ws-sub", url)).await.unwrap();
    let publ = m.add_session(fast_opts("ws-pub", url)).await.unwrap();
    let mut rx = sub.messages();
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
    let msg = recv(&mut rx).await;
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

#[actix_rt::test]
async fn ws_url_routes_messages_through_mosquitto_when_it_has_websockets_else_rumqttd() {
    init_tracing();
    match mosquitto_ws() {
        Some((_broker, port)) => {
            println!("mosquitto has websockets: ws:// tested against it on port {port}");
            assert_routes_over(&format!("ws://127.0.0.1:{port}/mqtt")).await;
        }
        None => {
            let port = start_rumqttd_ws();
            assert_routes_over(&format!("ws://127.0.0.1:{port}/mqtt")).await;
        }
    }
}

#[actix_rt::test]
async fn wss_url_routes_messages_through_mosquitto_when_it_has_websockets() {
    init_tracing();
    let pki = TestPki::new("wss");
    let server = pki.server("server", &["127.0.0.1"]);
    let port = free_port();
    let lines = format!(
        "{}protocol websockets\n",
        tls_listener(port, &pki.ca_file, &server, false)
    );
    let started =
        std::panic::catch_unwind(|| Mosquitto::start_with(MosquittoConfig::new().extra(&lines)));
    let Some(_broker) = started
        .ok()
        .filter(|b| b.log().contains("Opening websockets listen socket"))
    else {
        println!(
            "NOTE: this mosquitto cannot start a websockets listener; wss:// not tested against a \
             real broker here (rumqttd is built without TLS)"
        );
        return;
    };
    let url = format!("wss://127.0.0.1:{port}/mqtt");
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(tls_opts("wss", &url, trusting(&pki.ca_file)))
        .await
        .unwrap();
    let mut rx = h.messages();
    h.subscribe("wss/#", QoS::AtLeastOnce).await.unwrap();
    h.wait_ready(T)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}: {:?}", h.status().last_error));
    h.publish(Publish::new("wss/echo", "over-wss").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let msg = recv(&mut rx).await;
    assert_eq!(
        (&*msg.topic, msg.payload_str().ok()),
        ("wss/echo", Some("over-wss"))
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

#[actix_rt::test]
async fn password_never_reaches_logs_debug_output_or_status_json() {
    const GOOD: &str = "g00d-Pa55word-7f3a";
    const BAD: &str = "wr0ng-Pa55word-91c2";
    let (logs, _guard) = capture_logs();
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
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);

    let plain_opts = fast_opts("plain", &broker.url()).credentials("user", GOOD);
    let tls = tls_opts(
        "tls",
        &format!("mqtts://127.0.0.1:{tls_port}"),
        trusting(&pki.ca_file),
    )
    .credentials("user", GOOD);
    let mut wrong = fast_opts("wrong", &broker.url()).credentials("user", BAD);
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

    let mut seen = vec![logs.text()];
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
    for text in &seen {
        assert!(
            !text.contains(GOOD) && !text.contains(BAD),
            "password leaked in:\n{text}"
        );
    }
    // The capture really was at trace level and saw the sessions' work.
    let text = logs.text();
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    assert!(text.contains("session ready"), "{text}");
    assert!(
        text.contains("\"wrong\"") || text.contains("wrong"),
        "{text}"
    );
    m.shutdown().await;
}
