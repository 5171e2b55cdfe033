//! Persistence with a real store and real processes: the durable outbox survives a
//! SIGKILL, durable subscriptions hold messages for routes not registered yet, removing a
//! session deletes its stored state.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; child processes report on stdout"
)]

mod common;

use std::time::Duration;

use common::*;
use mqtt_sessions::store::Store;
use mqtt_sessions::{QoS, SessionManager, SessionOptions};

const T: Duration = Duration::from_secs(30);
const CHILD: &str = "MQTT_SESSIONS_PERSISTENCE_CHILD";

fn child_opts(name: &str, url: &str) -> SessionOptions {
    let mut o = fast_opts(name, url).client_id(format!("{name}-cid"));
    o.connect.clean_session = false;
    o.connect.persistent = true;
    o
}

/// Child process entry: run by its parent test with `MQTT_SESSIONS_PERSISTENCE_CHILD`
/// (`mode store_dir broker_url`). Modes: `publish` (publish QoS 1 forever, printing
/// `accepted N` after each accepted publish), `replay` (open the store, let the outbox
/// drain, print `drained`), `durable-route` (register the named route and print what it gets).
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    let spec = child_spec(CHILD);
    let parts: Vec<&str> = spec.splitn(3, ' ').collect();
    let (mode, dir, url) = (parts[0], parts[1], parts[2]);
    let m = SessionManager::builder().store(dir).build().unwrap();
    match mode {
        "publish" => {
            let h = m.add_session(child_opts("pub", url)).await.unwrap();
            for i in 0.. {
                // `enqueue`: accepted once durable in the store (the broker is down).
                h.enqueue(
                    mqtt_sessions::Publish::new(format!("out/{i}"), format!("{i}"))
                        .qos(QoS::AtLeastOnce),
                )
                .await
                .unwrap();
                println!("accepted {i}");
            }
        }
        "replay" => {
            let h = m.add_session(child_opts("pub", url)).await.unwrap();
            println!("replaying {}", h.metrics().pending_messages);
            assert!(
                poll_until_async(T, || {
                    let n = h.metrics().pending_messages;
                    async move { n == 0 }
                })
                .await
            );
            println!("drained");
        }
        "subscribe" => {
            m.add_session(child_opts("sub", url)).await.unwrap();
            let l = m
                .route("durable/#")
                .session("sub")
                .name("orders")
                .listen()
                .await
                .unwrap();
            // An unnamed route: not durable, so the next process unsubscribes its filter.
            let _unnamed = m.listen_to("sub", "stale/#").await.unwrap();
            m.wait_for_session("sub", T).await.unwrap();
            println!("subscribed {}", l.route().name());
            loop {
                let msg = l.recv().await.unwrap();
                println!("got {}", msg.payload_str().unwrap());
            }
        }
        "resume" => {
            m.add_session(child_opts("sub", url)).await.unwrap();
            m.wait_for_session("sub", T).await.unwrap();
            // Messages arrive (and are held in the store) before the application
            // registers its route again.
            let l = m
                .route("durable/#")
                .session("sub")
                .name("orders")
                .listen()
                .await
                .unwrap();
            while let Some(msg) = l.recv_timeout_async(Duration::from_secs(3)).await {
                println!("got {}", msg.payload_str().unwrap());
            }
            println!("done");
        }
        other => panic!("unknown child mode {other}"),
    }
    m.shutdown().await;
}

/// Helper for the child: an async receive with a deadline.
trait RecvTimeoutAsync {
    async fn recv_timeout_async(&self, d: Duration) -> Option<mqtt_sessions::Message>;
}

impl RecvTimeoutAsync for mqtt_sessions::Listener {
    async fn recv_timeout_async(&self, d: Duration) -> Option<mqtt_sessions::Message> {
        tokio::time::timeout(d, self.recv()).await.ok().flatten()
    }
}

#[actix_rt::test]
async fn a_killed_process_outbox_is_replayed_by_the_next_process_with_the_same_store() {
    init_tracing();
    let broker = Mosquitto::start();
    let url = broker.url();
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    // The broker is down: every accepted publish sits in the durable outbox.
    let mut first = ChildProc::spawn(CHILD, "publish", dir.path(), &url);
    assert!(
        first.wait_line("accepted ", 200).await,
        "{:?}",
        first.lines.lock().unwrap()
    );
    first.kill9();
    let accepted: Vec<usize> = first
        .lines_with("accepted ")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(accepted.len() >= 200);

    broker.restart();
    let sub = Sub::spawn(broker.port(), "out/#", 1);
    let mut second = ChildProc::spawn(CHILD, "replay", dir.path(), &url);
    assert!(
        second.wait_line("drained", 1).await,
        "{:?}",
        second.lines.lock().unwrap()
    );
    assert!(second.wait_exit().await);
    let replayed: usize = second.lines_with("replaying ")[0].parse().unwrap();
    assert!(
        replayed >= accepted.len(),
        "replayed {replayed} of {} accepted",
        accepted.len()
    );
    assert!(
        sub.wait_for_count_async(accepted.len(), T).await,
        "{} of {}",
        sub.count(),
        accepted.len()
    );
    let seen: std::collections::BTreeSet<String> = sub.lines().into_iter().collect();
    for i in &accepted {
        assert!(
            seen.contains(&format!("out/{i} {i}")),
            "accepted publish {i} never reached the broker"
        );
    }
}

#[actix_rt::test]
async fn a_durable_route_receives_what_was_published_while_its_process_was_down() {
    init_tracing();
    let broker = Mosquitto::start();
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let mut first = ChildProc::spawn(CHILD, "subscribe", dir.path(), &url);
    assert!(
        first.wait_line("subscribed ", 1).await,
        "{:?}",
        first.lines.lock().unwrap()
    );
    publish(broker.port(), "durable/a", "before", 1, false);
    assert!(first.wait_line("got ", 1).await);
    first.kill9();
    // Published while the application is down; the broker queues them for its session.
    publish_many(broker.port(), "durable/b", 50, 1);
    let mut second = ChildProc::spawn(CHILD, "resume", dir.path(), &url);
    assert!(
        second.wait_line("done", 1).await,
        "{:?}",
        second.lines.lock().unwrap()
    );
    assert!(second.wait_exit().await);
    let got: std::collections::BTreeSet<String> = second.lines_with("got ").into_iter().collect();
    for i in 0..50 {
        assert!(got.contains(&i.to_string()), "message {i} lost: {got:?}");
    }
    // The filter only an unnamed route wanted was unsubscribed at the broker.
    assert!(
        broker
            .wait_for_log_async("Received UNSUBSCRIBE from sub-cid", T)
            .await,
        "{}",
        broker.log()
    );
}

#[actix_rt::test]
async fn with_a_store_a_qos1_publish_is_accepted_while_the_broker_is_down_and_delivered_later() {
    init_tracing();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::builder().store(dir.path()).build().unwrap();
    let h = m.add_session(fast_opts("st", &broker.url())).await.unwrap();
    m.wait_for_session("st", T).await.unwrap();
    broker.stop();
    assert!(
        poll_until_async(T, || {
            let s = h.is_ready();
            async move { !s }
        })
        .await
    );
    for i in 0..10 {
        // `enqueue` returns once written to the store, not after a PUBACK that cannot
        // come yet.
        let p = mqtt_sessions::Publish::new("st/x", format!("{i}")).qos(QoS::AtLeastOnce);
        tokio::time::timeout(T, h.enqueue(p))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(h.metrics().pending_messages, 10);
    broker.restart();
    let sub = Sub::spawn(broker.port(), "st/#", 1);
    // The subscriber may come after the replay; what matters is the outbox drains.
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().pending_messages;
            async move { n == 0 }
        })
        .await
    );
    drop(sub);
    m.shutdown().await;
}

#[actix_rt::test]
async fn removing_a_session_deletes_its_stored_state_and_keeps_its_metadata() {
    init_tracing();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    {
        let m = SessionManager::builder().store(dir.path()).build().unwrap();
        let h = m.add_session(fast_opts("gone", &dead)).await.unwrap();
        let keep = m.add_session(fast_opts("kept", &dead)).await.unwrap();
        for h in [&h, &keep] {
            // Accepted (in the store's outbox): the broker is unreachable.
            h.enqueue(mqtt_sessions::Publish::new("x/y", "queued").qos(QoS::AtLeastOnce))
                .await
                .unwrap();
        }
        m.remove_session("gone").await.unwrap();
        m.remove_session_keep_state("kept").await.unwrap();
        m.shutdown().await;
    }
    // Wait for sled's background threads to release the directory.
    let store = {
        let mut opened = None;
        assert!(
            poll_until_async(T, || {
                opened = Store::open(dir.path()).ok();
                let ok = opened.is_some();
                async move { ok }
            })
            .await
        );
        opened.unwrap()
    };
    assert_eq!(store.outbox_len("gone").unwrap(), 0);
    assert_eq!(store.outbox_len("kept").unwrap(), 1);
    let meta = store
        .session_meta_get("gone")
        .unwrap()
        .expect("metadata kept");
    assert!(meta.client_id.starts_with("mqtt-sessions-gone"), "{meta:?}");
}
