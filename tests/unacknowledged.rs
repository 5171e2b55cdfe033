//! Messages left unacknowledged while the session stays connected
//! (`Message::leave_unacknowledged`, a `Listener` dropped with messages queued) come back
//! at the next connection of the persistent session: a real mosquitto with persistence and
//! its default test window (`max_inflight_messages 20`), a store, and a second manager (or
//! process) on the same store and client id.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; child processes report on stdout"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_sessions::{Listener, Overflow, SessionManager, SessionOptions};

const T: Duration = Duration::from_secs(30);
const CHILD: &str = "MQTT_SESSIONS_UNACK_CHILD";
/// Messages published.
const N: usize = 200;
/// Messages the application takes (and handles) before it drops its listener.
const TAKEN: usize = 30;
const FILTER: &str = "unack/#";
/// Capacity of the listener's queue.
const CAPACITY: usize = 10;

fn opts(url: &str, cid: &str) -> SessionOptions {
    let mut o = fast_opts("s", url).client_id(cid.to_string());
    o.connect.clean_session = false;
    o.connect.persistent = true;
    o
}

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Publishes `0..N` at QoS 1 on `unack/x` from another thread.
fn publish_all(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || publish_lines(port, "unack/x", &payloads(N), 1))
}

/// A second route on the same filter that handles everything at once: it keeps the
/// session subscribed after the first route goes, and it does not hold back any
/// acknowledgement itself.
fn keeper(l: Listener) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(m) = l.recv().await {
            s.lock().unwrap().push(m.payload_str().unwrap().to_string());
        }
    });
    seen
}

/// What the application of the first run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Takes every message from a listener and leaves every 20th unacknowledged (10 of
    /// them, so that the broker's window keeps room and later messages flow).
    Leave,
    /// Takes [`TAKEN`] messages from a listener, lets its queue fill ([`CAPACITY`]) with
    /// more messages waiting for room behind it, and drops the listener.
    DropListener,
    /// The same with a session's `messages()` receiver.
    DropReceiver,
    /// [`Mode::DropListener`] with a route whose QoS 0 overflow policy is `DropOldest`.
    DropOldestListener,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "leave" => Mode::Leave,
            "listener" => Mode::DropListener,
            "receiver" => Mode::DropReceiver,
            "oldest" => Mode::DropOldestListener,
            other => panic!("unknown mode {other}"),
        }
    }
}

/// The application's consumer: a listener or a session's receiver.
enum Consumer {
    Listener(Listener),
    Receiver(Listener),
}

impl Consumer {
    async fn recv(&mut self) -> Option<mqtt_sessions::Message> {
        match self {
            Consumer::Listener(l) => l.recv().await,
            Consumer::Receiver(r) => r.recv().await,
        }
    }

    fn len(&self) -> usize {
        match self {
            Consumer::Listener(l) => l.len(),
            Consumer::Receiver(r) => r.len(),
        }
    }
}

/// The first run (see [`Mode`]), until the moment the session is stopped (or the process
/// killed). Returns the messages that were not handled (and must come again).
async fn first_run(m: &SessionManager, url: &str, port: u16, cid: &str, mode: Mode) -> Vec<String> {
    let mut o = opts(url, cid);
    o.performance.message_channel_size = CAPACITY;
    let h = m.add_session(o).await.unwrap();
    let mut a = if mode == Mode::DropReceiver {
        Consumer::Receiver(h.messages())
    } else {
        let overflow = if mode == Mode::DropOldestListener {
            Overflow::DropOldest
        } else {
            Overflow::Backpressure
        };
        let l = m
            .route(FILTER)
            .session("s")
            .capacity(CAPACITY)
            .overflow(overflow)
            .listen()
            .await
            .unwrap();
        Consumer::Listener(l)
    };
    let keeper = keeper(m.listen_to("s", FILTER).await.unwrap());
    m.wait_for_session("s", T).await.unwrap();
    let publisher = publish_all(port);
    let mut not_handled = Vec::new();
    if mode == Mode::Leave {
        for i in 0..N {
            let msg = tokio::time::timeout(T, a.recv())
                .await
                .unwrap_or_else(|_| panic!("message {i} of {N} did not come"))
                .unwrap();
            let p = msg.payload_str().unwrap().to_string();
            if p.parse::<usize>().unwrap() % 20 == 7 {
                not_handled.push(p);
                msg.leave_unacknowledged();
            }
        }
    } else {
        for i in 0..TAKEN {
            let msg = tokio::time::timeout(T, a.recv())
                .await
                .unwrap_or_else(|_| panic!("message {i} did not come"))
                .unwrap();
            assert_eq!(msg.payload_str().unwrap(), i.to_string());
        }
        // Nothing more is taken: the consumer's queue fills, and later messages wait for
        // room in it (their acknowledgements wait too). The session fills the queue from
        // another thread: the other route may be ahead of it for a while.
        eventually_async(
            T,
            "messages waiting for room in the consumer's queue",
            || {
                let n = keeper.lock().unwrap().len();
                let queued = a.len();
                async move { n > TAKEN + CAPACITY + 1 && queued == CAPACITY }
            },
        )
        .await;
        let seen = keeper.lock().unwrap().clone();
        drop(a);
        // Every message the other route saw before the drop was queued for the consumer
        // or waiting for room in its queue — but the last, which may have been on its
        // way to the consumer when it went.
        not_handled = seen[TAKEN..seen.len() - 1].to_vec();
    }
    publisher.await.unwrap();
    not_handled
}

/// The second run: a new manager on the same store and client id. Returns how many
/// times each message arrived, once every one of `expected` did or after [`T`].
async fn second_run(
    dir: &std::path::Path,
    url: &str,
    cid: &str,
    expected: &[String],
) -> BTreeMap<String, usize> {
    let m = open_manager(dir).await;
    // A route for every session, registered before the session: nothing waits for it.
    let l = m.listen(FILTER).await.unwrap();
    m.add_session(opts(url, cid)).await.unwrap();
    let want: BTreeSet<&String> = expected.iter().collect();
    let mut got = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + T;
    while !want.iter().all(|w| got.contains_key(*w)) {
        match tokio::time::timeout_at(deadline, l.recv()).await {
            Ok(Some(msg)) => {
                *got.entry(msg.payload_str().unwrap().to_string())
                    .or_insert(0) += 1
            }
            _ => break,
        }
    }
    drop(l);
    m.shutdown().await;
    got
}

/// A manager on `dir`, once the previous one (or process) has let go of the store.
async fn open_manager(dir: &std::path::Path) -> SessionManager {
    let mut opened = None;
    assert!(
        poll_until_async(T, || {
            opened = SessionManager::builder().store(dir).build().ok();
            let ok = opened.is_some();
            async move { ok }
        })
        .await,
        "the store stayed locked"
    );
    opened.unwrap()
}

/// Checks that every message of `expected` came again; duplicates (messages handled in
/// the first run and delivered again) are allowed and reported.
fn check(expected: &[String], got: &BTreeMap<String, usize>, broker: &Mosquitto) {
    let lost: Vec<&String> = expected.iter().filter(|e| !got.contains_key(*e)).collect();
    let dups = got.values().map(|n| n - 1).sum::<usize>()
        + got.keys().filter(|k| !expected.contains(k)).count();
    println!(
        "expected again {}, came again {}, lost {}, duplicates {dups}",
        expected.len(),
        got.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} messages left unacknowledged never came again: {lost:?}\n{}",
        lost.len(),
        expected.len(),
        broker.diagnostics()
    );
}

fn broker() -> Mosquitto {
    Mosquitto::start_with(MosquittoConfig::new().persistence(true))
}

/// Child process entry: run by its parent test with `MQTT_SESSIONS_UNACK_CHILD`
/// (`mode store_dir broker_url`, mode `<leave|listener|receiver>:<port>:<client id>`): the first run, then
/// `unhandled N` and `dropped`, and waits to be killed.
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    let spec = child_spec(CHILD);
    let parts: Vec<&str> = spec.splitn(3, ' ').collect();
    let (mode, dir, url) = (parts[0], parts[1], parts[2]);
    let f: Vec<&str> = mode.split(':').collect();
    let m = SessionManager::builder().store(dir).build().unwrap();
    let not_handled = first_run(&m, url, f[1].parse().unwrap(), f[2], Mode::parse(f[0])).await;
    for p in &not_handled {
        println!("unhandled {p}");
    }
    println!("dropped");
    std::future::pending::<()>().await;
}

#[actix_rt::test]
async fn messages_left_unacknowledged_come_again_after_a_clean_stop_while_later_ones_are_acknowledged(
) {
    init_tracing();
    let broker = broker();
    let (url, cid) = (broker.url(), "unack-leave");
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder().store(dir.path()).build().unwrap();
    let expected = first_run(&m, &url, broker.port(), cid, Mode::Leave).await;
    assert_eq!(expected.len(), N / 20);
    // Later messages are acknowledged: every message but those left.
    let pubacks = format!("Received PUBACK from {cid} ");
    let handled = N - expected.len();
    eventually_async(T, "a PUBACK for every message handled", || {
        let n = broker.log().matches(&pubacks).count();
        async move { n == handled }
    })
    .await;
    m.shutdown().await;
    drop(m);
    let got = second_run(dir.path(), &url, cid, &expected).await;
    check(&expected, &got, &broker);
}

#[actix_rt::test]
async fn messages_queued_in_a_dropped_listener_come_again_after_a_clean_stop() {
    init_tracing();
    let broker = broker();
    let (url, cid) = (broker.url(), "unack-drop");
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder().store(dir.path()).build().unwrap();
    let expected = first_run(&m, &url, broker.port(), cid, Mode::DropListener).await;
    m.shutdown().await;
    drop(m);
    let got = second_run(dir.path(), &url, cid, &expected).await;
    check(&expected, &got, &broker);
}

#[actix_rt::test]
async fn messages_queued_in_a_dropped_listener_come_again_after_a_sigkill() {
    init_tracing();
    let broker = broker();
    let (url, cid) = (broker.url(), "unack-kill");
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildProc::spawn(
        CHILD,
        &format!("listener:{}:{cid}", broker.port()),
        dir.path(),
        &url,
    );
    assert!(
        child.wait_line("dropped", 1).await,
        "{:?}",
        child.lines.lock().unwrap()
    );
    child.kill9();
    let expected = child.lines_with("unhandled ");
    assert!(expected.len() > CAPACITY, "{expected:?}");
    let got = second_run(dir.path(), &url, cid, &expected).await;
    check(&expected, &got, &broker);
}

#[actix_rt::test]
async fn messages_queued_in_a_dropped_session_receiver_come_again_after_a_clean_stop() {
    init_tracing();
    let broker = broker();
    let (url, cid) = (broker.url(), "unack-receiver");
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder().store(dir.path()).build().unwrap();
    let expected = first_run(&m, &url, broker.port(), cid, Mode::DropReceiver).await;
    m.shutdown().await;
    drop(m);
    let got = second_run(dir.path(), &url, cid, &expected).await;
    check(&expected, &got, &broker);
}

#[actix_rt::test]
async fn messages_queued_in_a_dropped_drop_oldest_listener_come_again_after_a_clean_stop() {
    init_tracing();
    let broker = broker();
    let (url, cid) = (broker.url(), "unack-oldest");
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder().store(dir.path()).build().unwrap();
    let expected = first_run(&m, &url, broker.port(), cid, Mode::DropOldestListener).await;
    m.shutdown().await;
    drop(m);
    let got = second_run(dir.path(), &url, cid, &expected).await;
    check(&expected, &got, &broker);
}
