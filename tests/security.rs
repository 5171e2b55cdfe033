//! Security checks: secrets stay out of every output, listeners default to loopback, the
//! store is readable by its owner only.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use mqtt_sessions::Publish;
use mqtt_sessions::{QoS, SessionManager};

const SECRET: &str = "s3cret-Passw0rd-that-must-not-leak";

#[actix_rt::test]
async fn the_password_never_reaches_metrics_status_snapshots_or_events() {
    init_tracing();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("alice", SECRET),
    );
    let m = SessionManager::new().unwrap();
    let mut events = m.events();
    let h = m
        .add_session(fast_opts("sec", &broker.url()).credentials("alice", SECRET))
        .await
        .unwrap();
    m.wait_for_session("sec", Duration::from_secs(15))
        .await
        .unwrap();
    h.publish(Publish::new("sec/x", "1").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    // A refused login too: its error text must not carry the password either.
    let mut wrong =
        fast_opts("sec-wrong", &broker.url()).credentials("alice", "wrong-but-also-secret");
    wrong.reconnect.max_attempts = Some(1);
    m.add_session(wrong).await.unwrap();
    let outputs = [
        m.metrics_text(),
        serde_json::to_string(&m.metrics()).unwrap(),
        serde_json::to_string(&m.session_infos()).unwrap(),
        serde_json::to_string(&h.status()).unwrap(),
        serde_json::to_string(h.options()).unwrap(),
        format!("{:?}", h.options()),
        format!("{h:?}"),
        format!("{m:?}"),
    ];
    for out in &outputs {
        assert!(!out.contains(SECRET), "password leaked in: {out}");
        assert!(
            !out.contains("wrong-but-also-secret"),
            "password leaked in: {out}"
        );
    }
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        let text = format!("{ev:?} {}", serde_json::to_string(&ev).unwrap());
        assert!(
            !text.contains(SECRET),
            "password leaked in an event: {text}"
        );
    }
    m.shutdown().await;
}

#[actix_rt::test]
async fn the_store_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let m = SessionManager::builder().store(&path).build().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "store directory mode {mode:o}");
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o077;
        assert_eq!(
            mode,
            0,
            "{} is readable by others ({mode:o})",
            entry.path().display()
        );
    }
    m.shutdown().await;
}
