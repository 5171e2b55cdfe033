//! SIGHUP and files renewed in place: a session whose TLS files (or password file) changed
//! in content, at the same path, is restarted with them; the others keep their connection.
//! Real mosquittos with mutual TLS, certificates made at test time.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(30);

/// A `[[sessions]]` block for a mutual-TLS broker, quick reconnects.
fn tls_session(name: &str, port: u16, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        r#"
[[sessions]]
name = "{name}"
brokers = ["mqtts://127.0.0.1:{port}"]
client_id = "{name}-id"
[sessions.connect]
connect_timeout = "2s"
[sessions.reconnect]
initial_delay = "100ms"
max_delay = "500ms"
[sessions.tls]
ca_file = "{}"
client_cert = "{}"
client_key = "{}"
"#,
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A mosquitto with a TLS listener on a port of its own, requiring client certificates
/// signed by the CA(s) in `trust`; the TLS port.
fn mtls_broker(trust: &Path, server: &CertFiles) -> (Mosquitto, u16) {
    let port = free_port();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new().extra(&tls_listener(port, trust, server, true)),
    );
    (broker, port)
}

/// The daemon's `/sessions` row of `name`.
fn row(d: &DaemonProcess, name: &str) -> Value {
    let (_, body) = plain_get(d.http, "/sessions").unwrap_or_default();
    let rows: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    rows.as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn sighup_restarts_a_session_whose_client_certificate_was_renewed_in_place_and_no_other() {
    let old = TestPki::new("old");
    let new = TestPki::new("new");
    // Broker 1 trusts client certificates of the old CA (its trust file changes below);
    // broker 2 always does.
    let trust = old.dir().join("broker-trust.pem");
    fs::copy(&old.ca_file, &trust).unwrap();
    let server = old.server("server", &["127.0.0.1"]);
    let (b1, port1) = mtls_broker(&trust, &server);
    let (b2, port2) = mtls_broker(&old.ca_file, &server);

    // The renewed session's files live at fixed paths, replaced in place later.
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (
        files.path().join("client.crt"),
        files.path().join("client.key"),
    );
    let first = old.client("rot-1", "rot");
    fs::copy(&first.cert, &cert).unwrap();
    fs::copy(&first.key, &key).unwrap();
    let still = old.client("still", "still");
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{{http}}\"\n{}{}",
        tls_session("rot", port1, &old.ca_file, &cert, &key),
        tls_session("still", port2, &old.ca_file, &still.cert, &still.key)
    );
    let d = DaemonProcess::start(BIN, &config);
    d.wait_ready(T);

    // Broker 1 now wants certificates of the new CA: the session's old one is refused.
    fs::copy(&new.ca_file, &trust).unwrap();
    b1.restart();
    eventually(T, "rot refused at the TLS handshake", || {
        let r = row(&d, "rot");
        r["state"] != "connected" && r["last_error"]["kind"] == "tls"
    });

    // Its certificate and key renewed in place: without a reload the old ones stay in use.
    let renewed = new.client("rot-2", "rot");
    fs::write(&cert, fs::read(&renewed.cert).unwrap()).unwrap();
    fs::write(&key, fs::read(&renewed.key).unwrap()).unwrap();
    let attempts = |r: &Value| r["metrics"]["connection_attempts"].as_u64().unwrap_or(0);
    let before = attempts(&row(&d, "rot"));
    eventually(T, "two more attempts with the old certificate", || {
        let r = row(&d, "rot");
        attempts(&r) >= before + 2 && r["state"] != "connected"
    });

    // SIGHUP with the config file unchanged: rot restarts with the new files and connects.
    assert!(send_signal(d.pid(), "HUP"));
    eventually(T, "rot connected with its renewed certificate", || {
        row(&d, "rot")["state"] == "connected"
    });
    let log = d.stderr();
    assert!(
        log.contains("the contents of its TLS or password files changed"),
        "{log}"
    );
    assert_eq!(
        log.matches("TLS or password files changed").count(),
        1,
        "only rot restarted:\n{log}"
    );
    assert!(
        b1.log().contains("as rot-id ("),
        "broker 1 never saw the renewed session:\n{}",
        b1.log()
    );
    // The untouched session kept its one connection.
    assert_eq!(
        b2.log().matches(" as still-id (").count(),
        1,
        "still reconnected:\n{}",
        b2.log()
    );
    assert_eq!(row(&d, "still")["state"], "connected");

    // A second SIGHUP with nothing changed restarts nothing.
    let reloads = |d: &DaemonProcess| {
        plain_get(d.http, "/metrics")
            .map(|(_, m)| m.contains("mqtt_sessions_config_reloads_total 2"))
            .unwrap_or(false)
    };
    assert!(send_signal(d.pid(), "HUP"));
    eventually(T, "the second reload", || reloads(&d));
    assert_eq!(
        d.stderr().matches("TLS or password files changed").count(),
        1,
        "{}",
        d.stderr()
    );
}
