//! How many Prometheus series each `metrics.per_session` mode costs: sessions pointed at a
//! closed port (cheap: they only retry), the registry gathered and its series counted.
//! `SERIES_SESSIONS=10000 cargo test --test series -- --nocapture` prints the figures of
//! the README.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a test that reports figures"
)]

use std::time::Duration;

use mqtt_sessions::{PerSessionMetrics, SessionManager, SessionOptions};

/// Series in the text exposition (sample lines).
fn series(manager: &SessionManager) -> usize {
    manager
        .metrics_text()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

async fn count(mode: PerSessionMetrics, sessions: usize, closed: u16) -> usize {
    let manager = SessionManager::builder()
        .metrics_per_session(mode)
        .workers(1)
        .build()
        .unwrap();
    for i in 0..sessions {
        let mut o = SessionOptions::new(format!("s{i}"), format!("mqtt://127.0.0.1:{closed}"));
        o.reconnect.initial_delay = Duration::from_secs(60);
        manager.add_session(o).await.unwrap();
    }
    let n = series(&manager);
    manager.shutdown().await;
    n
}

#[actix_rt::test]
async fn each_per_session_mode_costs_what_the_readme_says() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let n: usize = std::env::var("SERIES_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut report = Vec::new();
    for (mode, per_session) in [
        (PerSessionMetrics::Full, 45),
        (PerSessionMetrics::Counters, 25),
        (PerSessionMetrics::Off, 0),
    ] {
        let base = count(mode, 0, closed).await;
        let total = count(mode, n, closed).await;
        report.push(format!("{}: {total} series at {n} sessions", mode.as_str()));
        assert_eq!(
            (total - base) / n,
            per_session,
            "{}: {base} series without sessions, {total} with {n}",
            mode.as_str()
        );
        assert_eq!((total - base) % n, 0, "{}", mode.as_str());
    }
    println!("{}", report.join("\n"));
}
