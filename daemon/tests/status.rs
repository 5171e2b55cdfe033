//! `mqtt-sessions status` against the library's HTTP endpoints served in-process: an IPv6
//! URL (`http://[::1]:port`), basic-auth credentials from the URL, rates from two samples
//! taken through one kept client, and a clear error without credentials.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::net::TcpListener;
use std::time::Duration;

use mqtt_sessions::http::{self, HttpOptions};
use mqtt_sessions::{SessionManager, SessionOptions};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");

/// Runs `mqtt-sessions status` with `args` without blocking the actix system serving
/// the endpoints: (exit code, stdout, stderr).
async fn status(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .arg("status")
            .args(args)
            .output(),
    )
    .await
    .expect("status answers within 30 s")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[actix_rt::test]
async fn status_asks_a_daemon_on_an_ipv6_loopback_url_with_credentials() {
    let manager = SessionManager::new().unwrap();
    // A broker that is never there: the session is listed all the same.
    manager
        .add_session(SessionOptions::new("edge-v6", "mqtt://127.0.0.1:1"))
        .await
        .unwrap();
    let listener = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = listener.local_addr().unwrap().port();
    let options = HttpOptions::new()
        .basic_auth_user("ops", &bcrypt::hash("s3cret", 4).unwrap())
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = actix_rt::spawn(http::serve_with(
        manager.clone(),
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));

    let url = format!("http://ops:s3cret@[::1]:{port}");
    let (code, table, err) = status(&["--url", &url, "--interval", "0.2"]).await;
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

    // Without credentials: a clear error naming what to do, exit 69.
    let (code, _, err) =
        status(&["--url", &format!("http://[::1]:{port}"), "--interval", "0"]).await;
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("[::1]"), "{err}");

    // Nothing listening: an error, not a hang.
    drop(stop);
    server.await.unwrap().unwrap();
    let (code, _, err) =
        status(&["--url", &format!("http://[::1]:{port}"), "--interval", "0"]).await;
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    manager.shutdown().await;
}
