//! Acknowledged when handled: a process killed (SIGKILL) while its routes hold QoS 1
//! messages — queued, or being handled by a slow consumer — gets those messages again
//! from the broker after a restart, for `handle`, `handle_async` and `listen` routes on a
//! persistent session. And a QoS 1 message that matches no route waits for one, then is
//! dropped and counted as `unrouted`.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; child processes report on stdout"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mqtt_sessions::{QoS, SessionManager};

const T: Duration = Duration::from_secs(60);
const CHILD: &str = "MQTT_SESSIONS_CRASH_CHILD";
/// How long the slow consumers take per message (load simulation, not synchronisation).
const SLOW: Duration = Duration::from_millis(10);
/// Messages published per test.
const N: usize = 300;

/// Child process entry: run by its parent test with `MQTT_SESSIONS_CRASH_CHILD`
/// (`kind dir url`). Registers a slow route of `kind` (`handle`, `handle_async` or
/// `listen`) on `crash/#` of a persistent session, prints `ready`, then `got P` when the
/// consumer starts on the message whose payload is P and `handled P` once it finished.
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    let spec = child_spec(CHILD);
    let parts: Vec<&str> = spec.splitn(3, ' ').collect();
    let (kind, url) = (parts[0], parts[2]);
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("sub", url).client_id("crash-sub".to_string());
    o.connect.clean_session = false;
    m.add_session(o).await.unwrap();
    let route = m.route("crash/#").session("sub").qos(QoS::AtLeastOnce);
    let _route = match kind {
        "handle" => route
            .handle(|msg| {
                println!("got {}", msg.payload_str().unwrap());
                std::thread::sleep(SLOW);
                println!("handled {}", msg.payload_str().unwrap());
            })
            .await
            .map(Some)
            .unwrap(),
        "handle_async" => route
            .handle_async(|msg| async move {
                println!("got {}", msg.payload_str().unwrap());
                tokio::time::sleep(SLOW).await;
                println!("handled {}", msg.payload_str().unwrap());
            })
            .await
            .map(Some)
            .unwrap(),
        "listen" => {
            let listener = route.listen().await.unwrap();
            actix_rt::spawn(async move {
                while let Some(msg) = listener.recv().await {
                    println!("got {}", msg.payload_str().unwrap());
                    // Received, not finished: the acknowledgement waits for the drop.
                    tokio::time::sleep(SLOW).await;
                    println!("handled {}", msg.payload_str().unwrap());
                    drop(msg);
                }
            });
            None
        }
        other => panic!("unknown child kind {other}"),
    };
    m.wait_for_session("sub", T).await.unwrap();
    println!("ready");
    std::future::pending::<()>().await;
}

/// Publishes `N` QoS 1 messages, SIGKILLs the consumer process after it handled some,
/// starts another on the same persistent session, and checks every message was handled.
async fn killed_while_handling_loses_nothing(kind: &str) {
    let broker = Mosquitto::start_with(MosquittoConfig::new().max_queued_messages(100_000));
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let mut first = ChildProc::spawn(CHILD, kind, dir.path(), &url);
    assert!(first.wait_line("ready", 1).await, "first child not ready");
    let port = broker.port();
    let publisher = std::thread::spawn(move || publish_many(port, "crash/x", N, 1));
    assert!(
        first.wait_line("handled ", N / 5).await,
        "first child handled {} of {N}",
        first.lines_with("handled ").len()
    );
    first.kill9();
    let before: Vec<String> = first.lines_with("handled ");
    let unfinished = first.lines_with("got ").len() - before.len();
    assert!(
        before.len() < N,
        "the kill came after everything was handled"
    );
    publisher.join().unwrap();

    let second = ChildProc::spawn(CHILD, kind, dir.path(), &url);
    let all = |second: &ChildProc| -> BTreeSet<String> {
        before
            .iter()
            .cloned()
            .chain(second.lines_with("handled "))
            .collect()
    };
    let complete = poll_until_async(T, || {
        let n = all(&second).len();
        async move { n >= N }
    })
    .await;
    let handled = all(&second);
    let missing: Vec<usize> = (0..N)
        .filter(|i| !handled.contains(&i.to_string()))
        .collect();
    let after = second.lines_with("handled ").len();
    let duplicates = before.len() + after - handled.len();
    println!(
        "{kind}: {N} sent, {} handled before the kill ({unfinished} started, unfinished), {after} after, {} missing, {duplicates} duplicates",
        before.len(),
        missing.len()
    );
    assert!(
        complete && missing.is_empty(),
        "{kind}: {} of {N} never handled: {missing:?}",
        missing.len()
    );
}

#[actix_rt::test]
async fn a_process_killed_while_a_handle_callback_is_slow_gets_its_unhandled_messages_again() {
    killed_while_handling_loses_nothing("handle").await;
}

#[actix_rt::test]
async fn a_process_killed_while_a_handle_async_future_runs_gets_its_unhandled_messages_again() {
    killed_while_handling_loses_nothing("handle_async").await;
}

#[actix_rt::test]
async fn a_process_killed_while_a_listener_holds_messages_gets_its_unhandled_messages_again() {
    killed_while_handling_loses_nothing("listen").await;
}

#[actix_rt::test]
async fn a_qos1_message_waits_unacknowledged_for_a_route_then_is_counted_as_unrouted() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("s", &broker.url());
    o.performance.unrouted_hold = Duration::from_millis(300);
    let h = m.add_session(o).await.unwrap();
    // A direct subscription with no route and no receiver: nothing consumes it.
    h.subscribe("orphan/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    publish_many(broker.port(), "orphan/x", 3, 1);
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().dropped_unrouted;
            async move { n == 3 }
        })
        .await,
        "unrouted drops: {}",
        h.metrics().dropped_unrouted
    );
    assert_eq!(
        h.metrics().messages_received,
        3,
        "each message was received once: it was acknowledged after the hold, not redelivered"
    );
    let text = m.metrics_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("mqtt_sessions_dropped_messages_total")
                && l.contains("reason=\"unrouted\"")
                && l.ends_with(" 3")),
        "unrouted drops exported:\n{text}"
    );

    // A message that arrives before its route is registered is held, not dropped.
    let mut o = fast_opts("late", &broker.url());
    o.performance.unrouted_hold = Duration::from_secs(30);
    let late = m.add_session(o).await.unwrap();
    late.subscribe("early/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("late", T).await.unwrap();
    publish_many(broker.port(), "early/x", 5, 1);
    assert!(
        poll_until_async(T, || {
            let n = late.metrics().messages_received;
            async move { n == 5 }
        })
        .await
    );
    let l = m.listen_to("late", "early/#").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let msg = tokio::time::timeout(T, l.recv()).await.unwrap().unwrap();
        got.push(msg.payload_str().unwrap().to_string());
    }
    assert_eq!(
        got,
        ["0", "1", "2", "3", "4"],
        "held messages keep their order"
    );
    assert_eq!(late.metrics().dropped_unrouted, 0);
    m.shutdown().await;
}
