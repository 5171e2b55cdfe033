//! Sessions against a real mosquitto: connection lifecycle, backoff, failover,
//! reconnection, publishing, bad input, removal and supervision.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mqtt_sessions::session::InjectFailure;
use mqtt_sessions::{
    Error, EventData, EventKind, OptionsError, Overflow, Publish, QoS, SessionManager,
    SessionState, TopicError,
};

const T: Duration = Duration::from_secs(15);

fn is_ready(d: &EventData) -> bool {
    matches!(d, EventData::SessionReady { .. })
}

/// The events of a session's first connect, in order (state changes as `state:old->new`).
const FIRST_CONNECT: [&str; 6] = [
    "session_added",
    "session_connecting",
    "state:disconnected->connecting",
    "session_connected",
    "state:connecting->connected",
    "session_ready",
];

#[actix_rt::test]
async fn events_arrive_in_order_connecting_connected_ready_with_state_changes() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m.add_session(fast_opts("s1", &broker.url())).await.unwrap();
    m.wait_for_session("s1", T).await.unwrap();
    assert!(log.wait_count("s1", 1, T, is_ready).await);
    let kinds: Vec<String> = log
        .of("s1")
        .iter()
        .map(|d| match d {
            EventData::SessionStateChanged { old, new } => format!("state:{old}->{new}"),
            other => other.kind().as_str().to_string(),
        })
        .collect();
    assert_eq!(kinds, FIRST_CONNECT);
    let ready = log.of("s1").into_iter().find(is_ready);
    assert_eq!(ready, Some(EventData::SessionReady { subscriptions: 0 }));
    assert_eq!(h.state(), SessionState::Connected);
    assert_eq!(m.status().get("s1"), Some(&SessionState::Connected));

    // Ready after a reconnect waits for (and counts) the restored subscription.
    h.subscribe("a/#", QoS::AtLeastOnce).await.unwrap();
    broker.restart();
    assert!(log.wait_count("s1", 2, T, is_ready).await);
    let ready = log.of("s1").into_iter().filter(is_ready).nth(1);
    assert_eq!(ready, Some(EventData::SessionReady { subscriptions: 1 }));
    m.shutdown().await;
}

#[actix_rt::test]
async fn session_added_while_broker_is_down_retries_within_backoff_bounds_and_becomes_ready_when_it_starts(
) {
    init_tracing();
    let broker = Mosquitto::start();
    broker.stop();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = fast_opts("late", &broker.url());
    o.reconnect.initial_delay = Duration::from_millis(50);
    o.reconnect.max_delay = Duration::from_millis(400);
    o.reconnect.factor = 2.0;
    o.reconnect.jitter = 0.25;
    let reconnect = o.reconnect.clone();
    let started = Instant::now();
    m.add_session(o).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "add_session must not wait for the network"
    );
    // Let it fail several times.
    let reconnecting = |d: &EventData| matches!(d, EventData::SessionReconnecting { .. });
    assert!(
        log.wait_count("late", 5, T, reconnecting).await,
        "{:?}",
        log.of("late")
    );
    for d in log.of("late") {
        if let EventData::SessionReconnecting { attempt, delay } = d {
            let (lo, hi) = reconnect.delay_bounds(attempt - 1);
            assert!(
                delay >= lo && delay <= hi,
                "attempt {attempt}: delay {delay:?} outside {lo:?}..={hi:?}"
            );
        }
    }
    assert_eq!(
        m.session("late").unwrap().state(),
        SessionState::Reconnecting
    );
    let failures = log.count("late", |d| {
        matches!(d, EventData::SessionDisconnected { error: Some(_) })
    });
    assert!(failures >= 5);
    broker.restart();
    m.wait_for_session("late", T).await.unwrap();
    assert!(m.session("late").unwrap().metrics().connection_attempts >= 6);
    m.shutdown().await;
}

#[actix_rt::test]
async fn attempts_are_spaced_by_at_least_the_announced_delay() {
    init_tracing();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("spaced", &dead);
    o.reconnect.initial_delay = Duration::from_millis(100);
    o.reconnect.max_delay = Duration::from_millis(300);
    o.reconnect.jitter = 0.0;
    let stamps: Arc<std::sync::Mutex<Vec<(std::time::SystemTime, EventData)>>> = Arc::default();
    let s2 = Arc::clone(&stamps);
    // Event times are taken when the session emits them, not when the handler thread runs.
    let _g = m.on_any_event(move |e| s2.lock().unwrap().push((e.time, e.data.clone())));
    m.add_session(o).await.unwrap();
    let enough = poll_until_async(T, || {
        let n = stamps
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| matches!(d, EventData::SessionConnecting { .. }))
            .count();
        async move { n >= 4 }
    })
    .await;
    assert!(enough);
    let v = stamps.lock().unwrap().clone();
    let mut announced = None;
    let mut last_attempt: Option<std::time::SystemTime> = None;
    for (t, d) in v {
        match d {
            EventData::SessionReconnecting { delay, .. } => announced = Some(delay),
            EventData::SessionConnecting { .. } => {
                if let (Some(prev), Some(delay)) = (last_attempt, announced.take()) {
                    let gap = t.duration_since(prev).unwrap_or_default();
                    // 20 ms of slack for the actor's own scheduling on a loaded machine;
                    // the delays here are 100 ms to 300 ms.
                    assert!(
                        gap + Duration::from_millis(20) >= delay,
                        "next attempt came {gap:?} after the last, before the backoff delay {delay:?}"
                    );
                }
                last_attempt = Some(t);
            }
            _ => {}
        }
    }
    m.shutdown().await;
}

#[actix_rt::test]
async fn with_a_dead_first_url_and_a_live_second_the_session_connects_to_the_second() {
    init_tracing();
    let broker = Mosquitto::start();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let o = fast_opts("failover", &dead).broker(broker.url());
    m.add_session(o).await.unwrap();
    m.wait_for_session("failover", T).await.unwrap();
    // The log is filled by a task of this thread; the session runs on a worker.
    let connected = EventData::SessionConnected {
        broker: broker.url(),
        session_present: false,
    };
    assert!(
        poll_until_async(T, || {
            let seen = log.of("failover").contains(&connected);
            async move { seen }
        })
        .await
    );
    let events = log.of("failover");
    assert!(events.contains(&EventData::SessionConnecting {
        broker: dead.clone(),
        attempt: 1
    }));
    assert!(events.contains(&EventData::SessionConnected {
        broker: broker.url(),
        session_present: false
    }));
    let first_failure = events.iter().find_map(|d| match d {
        EventData::SessionDisconnected { error: Some(f) } => Some(f.clone()),
        _ => None,
    });
    assert_eq!(first_failure.map(|f| f.broker), Some(dead));
    assert_eq!(
        m.session("failover").unwrap().status().broker,
        Some(broker.url())
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn after_kill9_and_restart_the_session_reconnects_resubscribes_and_receives() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m
        .add_session(fast_opts("phoenix", &broker.url()))
        .await
        .unwrap();
    let rx = h.messages();
    h.subscribe("k/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("phoenix", T).await.unwrap();
    broker.kill9();
    let lost = |d: &EventData| matches!(d, EventData::SessionDisconnected { error: Some(_) });
    assert!(log.wait_count("phoenix", 1, T, lost).await);
    broker.restart();
    assert!(
        log.wait_count("phoenix", 2, T, is_ready).await,
        "{:?}",
        log.of("phoenix")
    );
    publish(broker.port(), "k/after", "hello", 1, false);
    let msg = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        (&*msg.topic, msg.payload_str().unwrap()),
        ("k/after", "hello")
    );
    assert_eq!(h.metrics().reconnects, 1);
    m.shutdown().await;
}

#[actix_rt::test]
async fn qos1_publishes_made_while_the_broker_is_down_are_delivered_once_it_is_back() {
    init_tracing();
    let broker = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    // A persistent mosquitto_sub session collects the messages while it is offline.
    let sub = Sub::options(broker.port(), "q/#")
        .qos(1)
        .persistent("down-sub")
        .spawn();
    sub.kill();
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(fast_opts("queuer", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("queuer", T).await.unwrap();
    broker.stop();
    assert!(
        poll_until_async(T, || {
            let s = h.state();
            async move { s == SessionState::Reconnecting }
        })
        .await
    );
    let mut pending = Vec::new();
    for i in 0..5 {
        let h = h.clone();
        pending.push(actix_rt::spawn(async move {
            h.publish(Publish::new(format!("q/{i}"), format!("m{i}")).qos(QoS::AtLeastOnce))
                .await
        }));
    }
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().pending_messages;
            async move { n == 5 }
        })
        .await
    );
    // QoS 0 is not queued.
    let q0 = h
        .publish(Publish::new("q/zero", "x").qos(QoS::AtMostOnce))
        .await;
    assert!(matches!(q0, Err(Error::NotConnected { .. })), "{q0:?}");
    broker.restart();
    for p in pending {
        tokio::time::timeout(T, p).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(h.metrics().pending_messages, 0);
    let sub = Sub::options(broker.port(), "q/#")
        .qos(1)
        .persistent("down-sub")
        .spawn();
    assert!(sub.wait_for_count_async(5, T).await, "{:?}", sub.lines());
    let mut lines = sub.lines();
    lines.sort();
    assert_eq!(
        lines,
        (0..5).map(|i| format!("q/{i} m{i}")).collect::<Vec<_>>()
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn past_max_pending_messages_publish_returns_queue_full() {
    init_tracing();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("full", &dead);
    o.performance.max_pending_messages = 3;
    let h = m.add_session(o).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..3 {
        let h = h.clone();
        pending.push(actix_rt::spawn(async move {
            h.publish(Publish::new("f/x", format!("{i}")).qos(QoS::AtLeastOnce))
                .await
        }));
    }
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().pending_messages;
            async move { n == 3 }
        })
        .await
    );
    let err = h
        .publish(Publish::new("f/x", "overflow").qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueFull { limit: 3, .. }), "{err}");
    m.shutdown().await;
    for p in pending {
        let r = p.await.unwrap();
        assert!(matches!(r, Err(Error::SessionClosed(_))), "{r:?}");
    }
}

#[actix_rt::test]
async fn retained_publish_is_seen_by_a_later_subscriber() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("retainer", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("retainer", T).await.unwrap();
    m.publish(
        "retainer",
        Publish::new("r/state", "on")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    )
    .await
    .unwrap();
    let sub = Sub::spawn(broker.port(), "r/#", 1);
    assert!(
        sub.wait_for_line_async("r/state on", T).await,
        "{:?}",
        sub.lines()
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn qos1_publish_returns_only_after_the_broker_acknowledged_it() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("acker", &broker.url());
    o.connect.keep_alive = Duration::from_secs(30);
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("acker", T).await.unwrap();
    broker.pause();
    let h2 = h.clone();
    let task = actix_rt::spawn(async move {
        h2.publish(Publish::new("ack/x", "1").qos(QoS::AtLeastOnce))
            .await
    });
    // Written to the socket but not acknowledged: still in flight.
    assert!(
        poll_until_async(T, || {
            let n = h.metrics().inflight_messages;
            async move { n == 1 }
        })
        .await
    );
    assert!(
        !task.is_finished(),
        "publish completed while the broker was frozen"
    );
    assert_eq!(h.metrics().messages_sent, 0);
    broker.resume();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(h.metrics().messages_sent, 1);
    assert_eq!(h.metrics().inflight_messages, 0);
    m.shutdown().await;
}

#[actix_rt::test]
async fn many_concurrent_publishes_past_the_mailbox_bound_each_complete_once_delivered() {
    // More publishes at once than the session's mailbox holds: the handle waits for room
    // (the bound holds) and every caller hears its own answer.
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(fast_opts("many", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("many", T).await.unwrap();
    let sub = Sub::spawn(broker.port(), "many/#", 1);
    let n = 300;
    let results = futures_util::future::join_all((0..n).map(|i| {
        let h = h.clone();
        async move {
            let p = mqtt_sessions::Publish::new("many/x", format!("{i}")).qos(QoS::AtLeastOnce);
            if i % 2 == 0 {
                h.publish(p).await
            } else {
                h.enqueue(p).await
            }
        }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(sub.wait_for_count_async(n, T).await, "{:?}", sub.payloads());
    let mut got: Vec<usize> = sub.payloads().iter().map(|p| p.parse().unwrap()).collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), n, "each message delivered");
    assert!(
        poll_until_async(T, || {
            let mt = h.metrics();
            async move { mt.messages_sent == n as u64 && mt.pending_messages == 0 }
        })
        .await
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn bad_inputs_give_typed_errors() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("good", &broker.url()).client_id("cid-1");
    o.performance.max_message_size = 16;
    let h = m.add_session(o).await.unwrap();

    let e = h
        .publish(Publish::new("a/+/b", "x").qos(QoS::AtMostOnce))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Topic(TopicError::WildcardInTopicName { .. })),
        "{e}"
    );
    let e = h
        .publish(Publish::new("", "x").qos(QoS::AtMostOnce))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Topic(TopicError::Empty { .. })), "{e}");
    let e = h.subscribe("a/#/b", QoS::AtMostOnce).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Topic(TopicError::MisplacedMultiLevelWildcard { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("[MQTT-4.7.1-2]"), "{e}");
    let e = h.subscribe("a+/b", QoS::AtMostOnce).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Topic(TopicError::MisplacedSingleLevelWildcard { .. })
        ),
        "{e}"
    );
    let e = QoS::try_from(3u8).unwrap_err();
    assert_eq!(e, mqtt_sessions::InvalidQos(3));
    assert!(matches!(Error::from(e), Error::InvalidQos(3)), "{e}");
    let e = serde_json::from_str::<QoS>("7").unwrap_err();
    assert!(e.to_string().contains("invalid QoS 7"), "{e}");
    let e = h
        .publish(Publish::new("a/b", vec![0u8; 17]).qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::PayloadTooLarge {
                size: 17,
                max: 16,
                ..
            }
        ),
        "{e}"
    );
    let e = m
        .publish("nobody", Publish::new("a/b", "x").qos(QoS::AtMostOnce))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::UnknownSession(ref n) if n == "nobody"),
        "{e}"
    );
    let e = m.remove_session("nobody").await.unwrap_err();
    assert!(matches!(e, Error::UnknownSession(_)), "{e}");
    let e = m.wait_for_session("nobody", T).await.unwrap_err();
    assert!(matches!(e, Error::UnknownSession(_)), "{e}");
    let e = m
        .add_session(fast_opts("good", &broker.url()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::DuplicateSession(ref n) if n == "good"),
        "{e}"
    );
    let e = m
        .add_session(fast_opts("other", &broker.url()).client_id("cid-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::DuplicateClientId { ref existing, ref client_id, .. } if existing == "good" && client_id == "cid-1"),
        "{e}"
    );
    // The same client id on another broker is fine.
    let other = Mosquitto::start();
    m.add_session(fast_opts("other", &other.url()).client_id("cid-1"))
        .await
        .unwrap();
    let e = m
        .add_session(fast_opts("bad-url", "http://127.0.0.1:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Options(OptionsError::InvalidBrokerUrl { .. })),
        "{e}"
    );
    let e = m
        .add_session(fast_opts("bad\nname", &broker.url()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Options(OptionsError::InvalidName { .. })),
        "{e}"
    );
    let mut zero = fast_opts("zero", &broker.url());
    zero.reconnect.initial_delay = Duration::ZERO;
    let e = m.add_session(zero).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Options(OptionsError::InvalidValue {
                field: "reconnect.initial_delay",
                ..
            })
        ),
        "{e}"
    );
    // Nothing of the refused sessions was registered.
    assert_eq!(
        m.list_sessions(),
        vec!["good".to_string(), "other".to_string()]
    );
    m.shutdown().await;
    let e = m
        .add_session(fast_opts("late", &broker.url()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Shutdown), "{e}");
}

#[actix_rt::test]
async fn remove_session_disconnects_cleanly_without_the_will_message() {
    init_tracing();
    let broker = Mosquitto::start();
    let sub = Sub::spawn(broker.port(), "will/#", 1);
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("testator", &broker.url()).client_id("testator-cid");
    o.connect.will =
        Some(mqtt_sessions::WillOptions::new("will/testator", "gone").qos(QoS::AtLeastOnce));
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("testator", T).await.unwrap();
    m.remove_session("testator").await.unwrap();
    assert!(
        broker
            .wait_for_log_async("Client testator-cid disconnected.", T)
            .await,
        "{}",
        broker.log()
    );
    // A sentinel published after the removal arrives; the will never did before it.
    publish(broker.port(), "will/sentinel", "s", 1, false);
    assert!(sub.wait_for_line_async("will/sentinel s", T).await);
    assert_eq!(sub.lines(), vec!["will/sentinel s".to_string()]);
    assert_eq!(h.state(), SessionState::Closed);
    assert!(m.list_sessions().is_empty());
    let e = h
        .publish(Publish::new("x", "y").qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SessionClosed(_)), "{e}");
    m.shutdown().await;
}

#[actix_rt::test]
async fn shutdown_disconnects_every_session() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(
            m.add_session(
                fast_opts(&format!("s{i}"), &broker.url()).client_id(format!("shut-{i}")),
            )
            .await
            .unwrap(),
        );
    }
    m.wait_for_all_sessions(T).await.unwrap();
    m.shutdown().await;
    for i in 0..3 {
        assert!(
            broker
                .wait_for_log_async(&format!("Client shut-{i} disconnected."), T)
                .await,
            "{}",
            broker.log()
        );
    }
    assert!(handles.iter().all(|h| h.state() == SessionState::Closed));
    assert!(m.list_sessions().is_empty());
}

#[actix_rt::test]
async fn an_event_handler_that_calls_back_into_the_manager_does_not_deadlock_and_a_panicking_one_does_not_stop_the_session(
) {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let m2 = m.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    let _g1 = m.on_event(EventKind::SessionReady, move |ev| {
        // Call back into the manager, synchronously and asynchronously.
        let st = m2.status();
        assert!(st.contains_key(&*ev.session));
        let r = futures_executor_block_on(m2.publish(
            &ev.session,
            Publish::new("cb/ready", "1").qos(QoS::AtLeastOnce),
        ));
        assert!(r.is_ok(), "{r:?}");
        seen2.fetch_add(1, Ordering::SeqCst);
    });
    let _g2 = m.on_any_event(|_| panic!("handler bug"));
    let sub = Sub::spawn(broker.port(), "cb/#", 1);
    m.add_session(fast_opts("cb", &broker.url())).await.unwrap();
    m.wait_for_session("cb", T).await.unwrap();
    assert!(
        poll_until_async(T, || {
            let n = seen.load(Ordering::SeqCst);
            async move { n == 1 }
        })
        .await
    );
    assert!(sub.wait_for_line_async("cb/ready 1", T).await);
    assert!(m.event_handler_panics() >= 3);
    assert!(m.session("cb").unwrap().is_ready());
    m.shutdown().await;
}

/// Blocks the event thread on a future (the handler runs outside the actix thread).
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f)
}

#[actix_rt::test]
async fn the_supervisor_restarts_a_session_actor_that_stopped_unexpectedly() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m
        .add_session(fast_opts("crashy", &broker.url()))
        .await
        .unwrap();
    let rx = h.messages();
    h.subscribe("c/#", QoS::AtLeastOnce).await.unwrap();
    m.wait_for_session("crashy", T).await.unwrap();
    h.addr().send(InjectFailure).await.unwrap();
    assert!(
        log.wait_count("crashy", 2, T, is_ready).await,
        "{:?}",
        log.of("crashy")
    );
    assert_eq!(h.status().restarts, 1);
    assert!(h.is_ready());
    // Subscriptions survived the restart.
    publish(broker.port(), "c/1", "alive", 1, false);
    let msg = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(msg.payload_str().unwrap(), "alive");
    h.publish(Publish::new("c/out", "ok").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    m.shutdown().await;
}

#[actix_rt::test]
async fn wait_for_all_sessions_times_out_naming_the_session_that_never_became_ready() {
    init_tracing();
    let broker = Mosquitto::start();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("alive", &broker.url()))
        .await
        .unwrap();
    m.add_session(fast_opts("never", &dead)).await.unwrap();
    let e = m
        .wait_for_all_sessions(Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("never"), "{e}");
    match e {
        Error::WaitTimeout { not_ready, .. } => assert_eq!(not_ready, vec!["never".to_string()]),
        other => panic!("unexpected {other}"),
    }
    m.shutdown().await;
}

#[actix_rt::test]
async fn messages_say_which_session_received_them_and_at_which_qos() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let a = m.add_session(fast_opts("a", &broker.url())).await.unwrap();
    let rx = a.messages();
    a.subscribe("m/q1", QoS::AtLeastOnce).await.unwrap();
    a.subscribe("m/q0", QoS::AtMostOnce).await.unwrap();
    m.wait_for_session("a", T).await.unwrap();
    publish(broker.port(), "m/q1", "one", 2, false);
    publish(broker.port(), "m/q0", "zero", 1, false);
    let first = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    let second = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        (&*first.session, &*first.topic, first.qos),
        ("a", "m/q1", QoS::AtLeastOnce)
    );
    assert_eq!(
        (&*second.session, &*second.topic, second.qos),
        ("a", "m/q0", QoS::AtMostOnce)
    );
    m.shutdown().await;
}

/// An actor that keeps every event it is sent.
struct EventCollector(Arc<std::sync::Mutex<Vec<mqtt_sessions::Event>>>);

impl actix::Actor for EventCollector {
    type Context = actix::Context<Self>;
}

impl actix::Handler<mqtt_sessions::Event> for EventCollector {
    type Result = ();
    fn handle(&mut self, ev: mqtt_sessions::Event, _: &mut actix::Context<Self>) {
        self.0.lock().unwrap().push(ev);
    }
}

/// Stops the actor it is sent to.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct StopCollector;

impl actix::Handler<StopCollector> for EventCollector {
    type Result = ();
    fn handle(&mut self, _: StopCollector, ctx: &mut actix::Context<Self>) {
        use actix::ActorContext;
        ctx.stop();
    }
}

fn kind_names(events: &[mqtt_sessions::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.data {
            EventData::SessionStateChanged { old, new } => format!("state:{old}->{new}"),
            other => other.kind().as_str().to_string(),
        })
        .collect()
}

#[actix_rt::test]
async fn events_read_as_a_stream_and_by_an_actor_through_a_recipient_come_in_the_same_order() {
    use actix::Actor;
    use futures_util::StreamExt;
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut stream = m.events();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let actor = EventCollector(Arc::clone(&seen)).start();
    let forwarder = m.events_to(actor.clone().recipient()).unwrap();
    assert!(forwarder.is_running());

    m.add_session(fast_opts("ev", &broker.url())).await.unwrap();
    m.wait_for_session("ev", T).await.unwrap();
    let want = FIRST_CONNECT;

    // As a `futures::Stream`: the first connect's events, in order.
    let mut read = Vec::new();
    while read.len() < want.len() {
        let ev = tokio::time::timeout(T, stream.next())
            .await
            .unwrap()
            .unwrap();
        read.push(ev);
    }
    assert_eq!(kind_names(&read), want);
    assert_eq!(stream.lagged(), 0);

    // Through the `Recipient<Event>`: the same events, in the same order.
    assert!(
        poll_until_async(T, || {
            let n = seen.lock().unwrap().len();
            async move { n >= 6 }
        })
        .await,
        "the actor got {:?}",
        kind_names(&seen.lock().unwrap())
    );
    assert_eq!(kind_names(&seen.lock().unwrap()), want);
    assert_eq!(*seen.lock().unwrap(), read);
    assert_eq!(forwarder.delivered(), 6);
    assert_eq!(forwarder.skipped(), 0);

    // The forwarding ends with the actor: the next event finds its mailbox closed.
    actor.send(StopCollector).await.unwrap();
    m.remove_session("ev").await.unwrap();
    assert!(
        poll_until_async(T, || {
            let running = forwarder.is_running();
            async move { !running }
        })
        .await,
        "the forwarder outlived its actor"
    );
    assert_eq!(forwarder.delivered(), 6);
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_reader_more_than_the_event_queue_behind_skips_the_oldest_events_and_counts_them() {
    use actix::Actor;
    use futures_util::StreamExt;
    use mqtt_sessions::event::{EventBus, EVENT_QUEUE};
    use mqtt_sessions::Event;
    const BEHIND: usize = 904;
    let bus = EventBus::new();
    let mut stream = bus.stream();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let actor = EventCollector(Arc::clone(&seen)).start();
    let forwarder = bus.forward_to(actor.recipient(), &actix_rt::Arbiter::current());
    // Emitted without a yield: neither the stream nor the forwarding task reads meanwhile.
    let total = EVENT_QUEUE + BEHIND;
    for attempt in 0..total {
        let data = EventData::SessionConnecting {
            broker: "b".into(),
            attempt: u32::try_from(attempt).unwrap(),
        };
        bus.emit(Event::new("lag".into(), data));
    }
    let attempt = |ev: &Event| match ev.data {
        EventData::SessionConnecting { attempt, .. } => attempt as usize,
        _ => usize::MAX,
    };

    // The stream: the newest EVENT_QUEUE events, in order, the skipped ones counted.
    let first = stream.next().await.unwrap();
    assert_eq!(attempt(&first), BEHIND);
    assert_eq!(stream.lagged(), BEHIND as u64);
    let rest: Vec<Event> = stream.by_ref().take(EVENT_QUEUE - 1).collect().await;
    assert_eq!(attempt(rest.last().unwrap()), total - 1);

    // The actor: the same, through its bounded mailbox.
    assert!(
        poll_until_async(T, || {
            let n = forwarder.delivered();
            async move { n == EVENT_QUEUE as u64 }
        })
        .await,
        "delivered {} skipped {}",
        forwarder.delivered(),
        forwarder.skipped()
    );
    assert_eq!(forwarder.skipped(), BEHIND as u64);
    assert!(
        poll_until_async(T, || {
            let n = seen.lock().unwrap().len();
            async move { n == EVENT_QUEUE }
        })
        .await
    );
    let got: Vec<usize> = seen.lock().unwrap().iter().map(attempt).collect();
    assert_eq!(got, (BEHIND..total).collect::<Vec<_>>());

    // Without its bus, the stream ends and the forwarding stops.
    drop(bus);
    assert!(tokio::time::timeout(T, stream.next())
        .await
        .unwrap()
        .is_none());
    assert!(
        poll_until_async(T, || {
            let running = forwarder.is_running();
            async move { !running }
        })
        .await
    );
}

#[actix_rt::test]
async fn a_session_receiver_takes_a_routes_overflow_policy_and_closes_like_a_listener() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(fast_opts("sink", &broker.url()))
        .await
        .unwrap();
    let mut rx = h.messages_with(2, Overflow::DropOldest);
    h.subscribe("o/#", QoS::AtMostOnce).await.unwrap();
    m.wait_for_session("sink", T).await.unwrap();
    for i in 0..5 {
        publish(broker.port(), "o/x", &i.to_string(), 0, false);
    }
    assert!(
        poll_until_async(T, || async { h.dropped_messages() == 3 }).await,
        "dropped {}",
        h.dropped_messages()
    );
    // The oldest went to make room: the last two are queued.
    let got: Vec<String> = std::iter::from_fn(|| rx.try_recv())
        .map(|m| m.payload_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["3", "4"]);
    assert_eq!(rx.route().stats().dropped_full, 3);
    assert_eq!(h.metrics().dropped_consumer_full, 3);

    // Closed: a message that reaches another receiver no longer reaches it, and its
    // `recv` ends.
    rx.close();
    let other = h.messages();
    publish(broker.port(), "o/x", "late", 0, false);
    let late = tokio::time::timeout(T, other.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.payload_str().unwrap(), "late");
    assert!(tokio::time::timeout(T, rx.recv()).await.unwrap().is_none());
    // What the closed receiver dropped still counts.
    assert_eq!(h.dropped_messages(), 3);
    m.shutdown().await;
}

/// A restart in place drops the actor's futures. A store write the session waits for
/// (its group commit, and the record of its packet ids: a persistent session with a store
/// on MQTT 3.1.1 does both) must still come back, or its batch never goes out and nothing
/// queued after it does either. (The session's core waits for the write's answer through
/// the actor's mailbox; the test holds the outcome, whichever way the answer travels.)
#[actix_rt::test]
async fn a_restart_while_a_store_write_is_in_flight_loses_neither_the_batch_nor_what_follows() {
    init_tracing();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // Every flush takes 300 ms: the failure lands while the write is in flight.
    let m = SessionManager::builder()
        .store(dir.path())
        .inject_flush_delay(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut o = fast_opts("durable", &broker.url());
    o.connect.clean_session = false;
    o.connect.persistent = true;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("durable", T).await.unwrap();
    // The publishes reach the actor's mailbox first (each future is polled once before
    // the next one), then the failure: the first publish's store write is running when
    // the actor stops, the others wait for the next batch.
    let publishes = futures_util::future::join_all(
        (0..20).map(|i| h.publish(Publish::new(format!("w/{i}"), "x").qos(QoS::AtLeastOnce))),
    );
    let inject = h.addr().send(InjectFailure);
    let (results, injected) =
        tokio::time::timeout(T, futures_util::future::join(publishes, inject))
            .await
            .expect("publishes still unanswered after the restart");
    injected.unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.is_ok(), "publish {i}: {r:?}");
    }
    assert_eq!(h.status().restarts, 1, "the failure restarted the actor");
    tokio::time::timeout(
        T,
        h.publish(Publish::new("w/after", "x").qos(QoS::AtLeastOnce)),
    )
    .await
    .expect("a publish after the restart got no answer")
    .unwrap();
    m.shutdown().await;
}
