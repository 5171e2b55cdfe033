//! A credentials provider against a real mosquitto with a password file: called on every
//! connect attempt, so a password changed at the broker is picked up at the next
//! reconnect; a failing provider is a typed connection failure, retried with backoff.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_sessions::{
    Credentials, CredentialsError, ErrorKind, SessionHandle, SessionManager, SessionState,
};

const T: Duration = Duration::from_secs(20);

/// The kind of the session's last connection failure, if any.
fn last_kind(h: &SessionHandle) -> Option<ErrorKind> {
    h.status().last_error.map(|e| e.kind)
}

#[actix_rt::test]
async fn a_provider_supplies_the_password_changed_at_the_broker_on_the_next_connect() {
    init_tracing();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("alice", "token-1"),
    );
    let token = Arc::new(Mutex::new(String::from("token-1")));
    let calls = Arc::new(AtomicUsize::new(0));
    let (current, counted) = (Arc::clone(&token), Arc::clone(&calls));
    // The static credentials are wrong: the provider's replace them.
    let opts = fast_opts("rotating", &broker.url())
        .credentials("alice", "stale")
        .credentials_provider(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Credentials::new("alice", current.lock().unwrap().as_str()))
        });
    let m = SessionManager::new().unwrap();
    let h = m.add_session(opts).await.unwrap();
    m.wait_for_session("rotating", T).await.unwrap();
    assert_eq!(h.status().state, SessionState::Connected);
    let first = calls.load(Ordering::SeqCst);
    assert!(first >= 1);

    // The broker's password changes; the provider still returns the old one: refused.
    broker.set_password("alice", "token-2");
    broker.restart();
    eventually_async(T, "the old token refused", || async {
        last_kind(&h) == Some(ErrorKind::Auth) && h.status().state != SessionState::Connected
    })
    .await;
    let refused = h.metrics().connection_errors_by_kind["auth"];
    assert!(refused >= 1);

    // The provider learns the new one: the next attempt connects with it.
    *token.lock().unwrap() = "token-2".into();
    eventually_async(T, "reconnected with the new token", || async {
        h.status().state == SessionState::Connected
    })
    .await;
    let now = calls.load(Ordering::SeqCst);
    // One call per attempt: the first connect, at least one refused, the last one.
    assert!(now >= first + 2, "provider called {now} times");
    assert!(
        h.metrics().connection_attempts >= u64::try_from(now).unwrap(),
        "{:?}",
        h.metrics()
    );
    let text = m.metrics_text();
    assert!(!text.contains("token-"), "a token leaked into the metrics");
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_failing_provider_is_a_credentials_failure_retried_with_backoff() {
    init_tracing();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("bob", "pw"),
    );
    let up = Arc::new(Mutex::new(false));
    let vault = Arc::clone(&up);
    let opts = fast_opts("vault", &broker.url()).credentials_provider(move || {
        if *vault.lock().unwrap() {
            Ok(Credentials::new("bob", "pw"))
        } else {
            Err(CredentialsError::new("vault unreachable"))
        }
    });
    let m = SessionManager::new().unwrap();
    let h = m.add_session(opts).await.unwrap();
    eventually_async(T, "two failed attempts of kind credentials", || async {
        h.metrics().connection_errors_by_kind["credentials"] >= 2
    })
    .await;
    let failure = h.status().last_error.unwrap();
    assert_eq!(failure.kind, ErrorKind::Credentials);
    assert!(
        failure.message.contains("vault unreachable"),
        "{}",
        failure.message
    );
    assert_ne!(h.status().state, SessionState::Connected);
    // No CONNECT reached the broker.
    assert!(
        !broker.log().contains("New client connected"),
        "{}",
        broker.log()
    );
    assert!(
        m.metrics_text()
            .contains("connection_errors_total{session=\"vault\",kind=\"credentials\"} "),
        "{}",
        m.metrics_text()
    );

    *up.lock().unwrap() = true;
    m.wait_for_session("vault", T).await.unwrap();
    assert_eq!(h.status().state, SessionState::Connected);
    m.shutdown().await;
}
