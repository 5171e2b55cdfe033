//! `mqtt-sessions status` against the library's HTTP endpoints served in-process: an IPv6
//! URL (`http://[::1]:port`), basic-auth credentials from the URL, rates from two samples
//! taken through one kept client, and clear errors without credentials or a server.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use mqtt_sessions::http::{self, HttpOptions};
use mqtt_sessions::{SessionManager, SessionOptions};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");

/// `mqtt-sessions status ARGS`: (exit code, stdout, stderr).
fn status(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Serves a manager with one session (to a broker that is never there) on `[::1]`, with
/// basic auth `ops:s3cret`, on a thread of its own until the test ends; its port.
fn serve_on_ipv6_loopback() -> u16 {
    let listener = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = listener.local_addr().unwrap().port();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let manager = SessionManager::new().unwrap();
            manager
                .add_session(SessionOptions::new("edge-v6", "mqtt://127.0.0.1:1"))
                .await
                .unwrap();
            let options = HttpOptions::new()
                .basic_auth_user("ops", &bcrypt::hash("s3cret", 4).unwrap())
                .unwrap();
            ready.send(()).unwrap();
            let _ = http::serve_with(manager, listener, options, std::future::pending()).await;
        });
    });
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    port
}

#[test]
fn status_asks_a_daemon_on_an_ipv6_loopback_url_with_credentials() {
    let port = serve_on_ipv6_loopback();
    let url = format!("http://ops:s3cret@[::1]:{port}");
    let (code, table, err) = status(&["--url", &url, "--interval", "0.2"]);
    assert_eq!(code, Some(0), "{err}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("SESSION") && header.contains("IN/S"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("edge-v6"))
        .unwrap_or_else(|| panic!("no row for the session: {table}"));
    // Two samples 0.2 s apart: the rate columns hold numbers, not `-`.
    assert!(row.contains("0.0"), "{row}");
    assert!(!table.contains("s3cret") && !err.contains("s3cret"));

    // Without credentials: a clear error naming what to do, exit 69.
    let (code, _, err) = status(&["--url", &format!("http://[::1]:{port}"), "--interval", "0"]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("HTTP 401") && err.contains("[::1]"), "{err}");

    // Nothing listening: an error, not a hang.
    let closed = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = status(&[
        "--url",
        &format!("http://[::1]:{closed}"),
        "--interval",
        "0",
    ]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}
