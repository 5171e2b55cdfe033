//! Routing against a real mosquitto: reference-counted subscriptions, global and session
//! routes, delivery guarantees and overflow accounting, every kind of consumer.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::*;
use mqtt_sessions::{EventData, Message, Overflow, QoS, SessionManager};

const T: Duration = Duration::from_secs(20);

async fn recv(l: &mqtt_sessions::Listener) -> Message {
    tokio::time::timeout(T, l.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("route ended")
}

#[actix_rt::test]
async fn two_routes_on_one_filter_both_receive_and_the_broker_sees_no_unsubscribe_until_the_last_stops(
) {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("s", &broker.url()).client_id("rc-client"))
        .await
        .unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let a = m.listen_to("s", "rc/#").await.unwrap();
    let b = m.listen_to("s", "rc/#").await.unwrap();
    publish(broker.port(), "rc/1", "one", 1, false);
    assert_eq!(recv(&a).await.payload_str().unwrap(), "one");
    assert_eq!(recv(&b).await.payload_str().unwrap(), "one");
    let subscribes = broker
        .log()
        .matches("Received SUBSCRIBE from rc-client")
        .count();
    assert_eq!(
        subscribes,
        1,
        "one SUBSCRIBE for two routes:\n{}",
        broker.log()
    );

    let mark = broker.log_len();
    drop(a);
    publish(broker.port(), "rc/2", "two", 1, false);
    assert_eq!(recv(&b).await.payload_str().unwrap(), "two");
    assert!(
        !broker
            .log_since(mark)
            .contains("Received UNSUBSCRIBE from rc-client"),
        "{}",
        broker.log_since(mark)
    );

    drop(b);
    assert!(
        broker
            .wait_for_log_since_async(mark, "Received UNSUBSCRIBE from rc-client", T)
            .await,
        "{}",
        broker.log_since(mark)
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_global_route_receives_messages_from_a_session_added_after_it() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let l = m.listen("late/#").await.unwrap();
    m.add_session(fast_opts("newcomer", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("newcomer", T).await.unwrap();
    publish(broker.port(), "late/x", "hi", 1, false);
    let msg = recv(&l).await;
    assert_eq!((&*msg.session, &*msg.topic), ("newcomer", "late/x"));
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_global_route_gets_one_copy_per_session_each_saying_which_session_and_qos() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    for s in ["a", "b"] {
        m.add_session(fast_opts(s, &broker.url())).await.unwrap();
    }
    m.wait_for_all_sessions(T).await.unwrap();
    let l = m
        .route("both/#")
        .qos(QoS::AtMostOnce)
        .listen()
        .await
        .unwrap();
    publish(broker.port(), "both/x", "p", 1, false);
    let (m1, m2) = (recv(&l).await, recv(&l).await);
    let sessions: BTreeSet<String> = [&m1, &m2].iter().map(|m| m.session.to_string()).collect();
    assert_eq!(sessions, BTreeSet::from(["a".to_string(), "b".to_string()]));
    // Published at QoS 1, subscribed at QoS 0: received at QoS 0.
    assert_eq!((m1.qos, m2.qos), (QoS::AtMostOnce, QoS::AtMostOnce));
    m.shutdown().await;
}

#[actix_rt::test]
async fn the_subscription_qos_is_the_highest_any_route_asks_for() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("q", &broker.url())).await.unwrap();
    m.wait_for_session("q", T).await.unwrap();
    let low = m
        .route("qos/#")
        .session("q")
        .qos(QoS::AtMostOnce)
        .listen()
        .await
        .unwrap();
    let high = m
        .route("qos/#")
        .session("q")
        .qos(QoS::ExactlyOnce)
        .listen()
        .await
        .unwrap();
    publish(broker.port(), "qos/a", "1", 2, false);
    assert_eq!(recv(&low).await.qos, QoS::ExactlyOnce);
    assert_eq!(recv(&high).await.qos, QoS::ExactlyOnce);
    drop(high);
    // The router re-subscribes at QoS 0; wait until the broker saw that SUBSCRIBE.
    assert!(
        poll_until_async(T, || {
            let n = broker.log().matches("Received SUBSCRIBE from").count();
            async move { n >= 3 }
        })
        .await
    );
    assert!(
        broker.wait_for_log_async("qos/# (QoS 0)", T).await,
        "{}",
        broker.log()
    );
    publish(broker.port(), "qos/b", "2", 2, false);
    let msg = recv(&low).await;
    assert_eq!(
        (msg.payload_str().unwrap(), msg.qos),
        ("2", QoS::AtMostOnce)
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn ten_thousand_qos1_messages_into_a_slow_listener_are_all_delivered_without_losing_the_connection(
) {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let mut o = fast_opts("slow", &broker.url());
    o.connect.keep_alive = Duration::from_secs(2);
    m.add_session(o).await.unwrap();
    m.wait_for_session("slow", T).await.unwrap();
    let l = m
        .route("load/#")
        .session("slow")
        .qos(QoS::AtLeastOnce)
        .capacity(10)
        .listen()
        .await
        .unwrap();
    const N: usize = 10_000;
    // The consumer takes ~0.5 ms per message, about 10x slower than mosquitto delivers.
    let consumer = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let mut total = 0usize;
        while seen.len() < N {
            match l.recv_timeout(Duration::from_secs(30)) {
                Some(msg) => {
                    total += 1;
                    seen.insert(msg.payload_str().unwrap().parse::<usize>().unwrap());
                    std::thread::sleep(Duration::from_micros(500));
                }
                None => break,
            }
        }
        (seen, total, l)
    });
    let port = broker.port();
    let publisher = std::thread::spawn(move || publish_many(port, "load/x", N, 1));
    let (seen, total, l) = actix_rt::task::spawn_blocking(move || consumer.join().unwrap())
        .await
        .unwrap();
    publisher.join().unwrap();
    assert_eq!(
        seen.len(),
        N,
        "missing: {:?}",
        (0..N)
            .filter(|i| !seen.contains(i))
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(total >= N);
    let lost = log.count("slow", |d| {
        matches!(d, EventData::SessionDisconnected { .. })
    });
    assert_eq!(
        lost,
        0,
        "the session dropped its connection: {:?}",
        log.of("slow")
    );
    assert_eq!(m.session("slow").unwrap().metrics().reconnects, 0);
    assert_eq!(l.route().stats().dropped_full, 0);
    m.shutdown().await;
}

#[actix_rt::test]
async fn qos0_overflow_is_dropped_and_counted_in_the_route_stats() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("o", &broker.url())).await.unwrap();
    m.wait_for_session("o", T).await.unwrap();
    let newest = m
        .route("ovf/#")
        .qos(QoS::AtMostOnce)
        .capacity(5)
        .overflow(Overflow::DropNewest)
        .listen()
        .await
        .unwrap();
    let oldest = m
        .route("ovf/#")
        .qos(QoS::AtMostOnce)
        .capacity(5)
        .overflow(Overflow::DropOldest)
        .listen()
        .await
        .unwrap();
    // Published at QoS 1, received at the routes' QoS 0.
    publish_many(broker.port(), "ovf/x", 50, 1);
    assert!(
        poll_until_async(T, || {
            let s = newest.route().stats();
            async move { s.delivered + s.dropped_full == 50 }
        })
        .await,
        "{:?}",
        newest.route().stats()
    );
    let s = newest.route().stats();
    assert_eq!((s.delivered, s.dropped_full), (5, 45));
    let kept: Vec<String> = std::iter::from_fn(|| newest.try_recv())
        .map(|m| m.payload_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, vec!["0", "1", "2", "3", "4"]);
    assert!(
        poll_until_async(T, || {
            let n = oldest.route().stats().dropped_full;
            async move { n == 45 }
        })
        .await
    );
    let kept: Vec<String> = std::iter::from_fn(|| oldest.try_recv())
        .map(|m| m.payload_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, vec!["45", "46", "47", "48", "49"]);
    m.shutdown().await;
}

/// Collects what it receives.
struct Collector(Arc<Mutex<Vec<String>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Message> for Collector {
    type Result = ();
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(format!(
            "{} {} {}",
            msg.session,
            msg.topic,
            msg.payload_str().unwrap_or("?")
        ));
    }
}

#[actix_rt::test]
async fn an_actor_route_receives_messages() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("act", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("act", T).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let addr = Collector(Arc::clone(&got)).start();
    let _route = m
        .route_to_session("act", "actor/#", addr.recipient())
        .await
        .unwrap();
    publish(broker.port(), "actor/1", "a", 1, false);
    publish(broker.port(), "actor/2", "b", 0, false);
    assert!(
        poll_until_async(T, || {
            let n = got.lock().unwrap().len();
            async move { n == 2 }
        })
        .await
    );
    assert_eq!(
        *got.lock().unwrap(),
        vec!["act actor/1 a".to_string(), "act actor/2 b".to_string()]
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_shared_subscription_on_two_sessions_splits_messages_with_none_delivered_to_both() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    for s in ["w1", "w2"] {
        m.add_session(fast_opts(s, &broker.url())).await.unwrap();
    }
    m.wait_for_all_sessions(T).await.unwrap();
    let l1 = m.listen_to("w1", "$share/workers/jobs/#").await.unwrap();
    let l2 = m.listen_to("w2", "$share/workers/jobs/#").await.unwrap();
    const N: usize = 200;
    publish_many(broker.port(), "jobs/x", N, 1);
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    let done = poll_until_async(T, || {
        while let Some(msg) = l1.try_recv() {
            assert_eq!(&*msg.session, "w1");
            a.insert(msg.payload_str().unwrap().to_string());
        }
        while let Some(msg) = l2.try_recv() {
            assert_eq!(&*msg.session, "w2");
            b.insert(msg.payload_str().unwrap().to_string());
        }
        let n = a.len() + b.len();
        async move { n >= N }
    })
    .await;
    assert!(done, "got {} + {}", a.len(), b.len());
    assert!(
        a.is_disjoint(&b),
        "delivered to both: {:?}",
        a.intersection(&b).collect::<Vec<_>>()
    );
    assert_eq!(a.len() + b.len(), N);
    assert!(!a.is_empty() && !b.is_empty(), "one worker got everything");
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_callback_that_panics_is_counted_and_the_route_keeps_working() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("cb", &broker.url())).await.unwrap();
    m.wait_for_session("cb", T).await.unwrap();
    let good = Arc::new(Mutex::new(Vec::new()));
    let g2 = Arc::clone(&good);
    let route = m
        .handle_to("cb", "cbk/#", move |msg| {
            let p = msg.payload_str().unwrap().to_string();
            if p == "boom" {
                panic!("handler bug");
            }
            g2.lock().unwrap().push(p);
        })
        .await
        .unwrap();
    publish(broker.port(), "cbk/1", "boom", 1, false);
    publish(broker.port(), "cbk/2", "fine", 1, false);
    assert!(
        poll_until_async(T, || {
            let n = good.lock().unwrap().len();
            async move { n == 1 }
        })
        .await
    );
    assert_eq!(route.stats().handler_panics, 1);
    assert_eq!(route.stats().delivered, 2);
    assert!(m.session("cb").unwrap().is_ready());
    m.shutdown().await;
}

#[actix_rt::test]
async fn an_async_handler_receives_messages_in_order() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("as", &broker.url())).await.unwrap();
    m.wait_for_session("as", T).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = Arc::clone(&got);
    let _r = m
        .handle_async("async/#", move |msg| {
            let g = Arc::clone(&g2);
            async move {
                // A handler that really suspends (not synchronisation): order must hold
                // across its await points.
                tokio::time::sleep(Duration::from_millis(1)).await;
                g.lock()
                    .unwrap()
                    .push(msg.payload_str().unwrap().to_string());
            }
        })
        .await
        .unwrap();
    publish_many(broker.port(), "async/x", 20, 1);
    assert!(
        poll_until_async(T, || {
            let n = got.lock().unwrap().len();
            async move { n == 20 }
        })
        .await
    );
    assert_eq!(
        *got.lock().unwrap(),
        (0..20).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn routes_on_unknown_sessions_and_bad_filters_are_refused() {
    init_tracing();
    let m = SessionManager::new().unwrap();
    let e = m.listen_to("ghost", "a/#").await.unwrap_err();
    assert!(matches!(e, mqtt_sessions::Error::UnknownSession(_)), "{e}");
    let e = m.listen("a/#/b").await.unwrap_err();
    assert!(matches!(e, mqtt_sessions::Error::Topic(_)), "{e}");
    let e = m.route("a").capacity(0).listen().await.unwrap_err();
    assert!(matches!(e, mqtt_sessions::Error::InvalidRoute(_)), "{e}");
    let _r = m.route("a").name("dup").listen().await.unwrap();
    let e = m.route("b").name("dup").listen().await.unwrap_err();
    assert!(matches!(e, mqtt_sessions::Error::DuplicateRoute(_)), "{e}");
    m.shutdown().await;
}

#[actix_rt::test]
async fn routes_added_in_a_burst_are_live_before_their_sessions_subscribe() {
    // The router publishes its table once per burst of added routes; each route must still
    // be in the table before its session subscribes, or the retained message the broker
    // sends right after the SUBACK would find no route.
    init_tracing();
    let broker = Mosquitto::start();
    const N: usize = 40;
    for i in 0..N {
        publish(
            broker.port(),
            &format!("burst/{i}"),
            &format!("kept {i}"),
            1,
            true,
        );
    }
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let adds = (0..N).map(|i| {
        let m = m.clone();
        async move { m.listen_to("s", &format!("burst/{i}")).await }
    });
    let listeners = futures_util::future::join_all(adds).await;
    for (i, l) in listeners.into_iter().enumerate() {
        let l = l.unwrap();
        assert_eq!(recv(&l).await.payload_str().unwrap(), format!("kept {i}"));
    }
    assert_eq!(
        m.metrics().dropped_messages,
        0,
        "a retained message found no route"
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn route_figures_appear_in_the_metrics_and_vanish_when_the_route_stops() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("rm", &broker.url())).await.unwrap();
    m.wait_for_session("rm", T).await.unwrap();
    let l = m
        .route("met/#")
        .name("meter")
        .qos(QoS::AtMostOnce)
        .capacity(2)
        .overflow(Overflow::DropNewest)
        .listen()
        .await
        .unwrap();
    publish_many(broker.port(), "met/x", 5, 1);
    assert!(
        poll_until_async(T, || {
            let s = l.route().stats();
            async move { s.delivered + s.dropped_full == 5 }
        })
        .await
    );
    let text = m.metrics_text();
    assert!(
        text.contains(r#"mqtt_sessions_route_delivered_total{route="meter"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mqtt_sessions_route_dropped_total{route="meter",reason="full"} 3"#),
        "{text}"
    );
    drop(l);
    assert!(
        poll_until_async(T, || {
            let t = m.metrics_text();
            async move { !t.contains("route=\"meter\"") }
        })
        .await
    );
    m.shutdown().await;
}

/// Threads of this process, from `/proc/self/status`.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[actix_rt::test]
async fn two_thousand_handle_routes_run_on_a_bounded_shared_pool_not_a_thread_each() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let before = threads();
    const ROUTES: usize = 2000;
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut routes = Vec::with_capacity(ROUTES);
    for i in 0..ROUTES {
        let handled = Arc::clone(&handled);
        let route = m
            .handle_to("s", &format!("pool/{i}"), move |_| {
                // Slow enough that several run at once.
                std::thread::sleep(Duration::from_millis(20));
                handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
            .unwrap();
        routes.push(route);
    }
    // A message for each of 200 routes at once: the pool runs them, many in parallel.
    let lines: Vec<String> = (0..200).map(|i| format!("pool/{i}")).collect();
    for topic in &lines {
        publish(broker.port(), topic, "x", 1, false);
    }
    let mut peak = 0;
    let done = poll_until_async(Duration::from_secs(60), || {
        peak = peak.max(threads());
        let n = handled.load(std::sync::atomic::Ordering::SeqCst);
        async move { n >= 200 }
    })
    .await;
    assert!(
        done,
        "{} of 200 handled",
        handled.load(std::sync::atomic::Ordering::SeqCst)
    );
    let pool = 2 * std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let bound = before + pool.max(4) + 1 + 8;
    println!("threads: {before} before, peak {peak} with {ROUTES} handle routes (bound {bound})");
    assert!(
        peak <= bound,
        "{peak} threads for {ROUTES} handle routes (before: {before}, bound {bound})"
    );
    drop(routes);
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_handle_routes_messages_arrive_in_order_while_another_handle_route_is_stuck() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    // Two sessions: one session acknowledges in arrival order, so a message stuck in one
    // of its routes holds back its later acknowledgements (and the broker's window); the
    // pool is what the two routes share.
    for name in ["s", "t"] {
        m.add_session(fast_opts(name, &broker.url())).await.unwrap();
        m.wait_for_session(name, T).await.unwrap();
    }
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let _stuck = m
        .handle_to("s", "stuck/#", move |_| {
            // Blocks its pool thread until the test releases it.
            let _ = stuck.lock().unwrap().recv_timeout(Duration::from_secs(60));
        })
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let got = Arc::clone(&seen);
    let _ordered = m
        .handle_to("t", "ordered/#", move |msg| {
            got.lock()
                .unwrap()
                .push(msg.payload_str().unwrap().to_string());
        })
        .await
        .unwrap();
    publish(broker.port(), "stuck/1", "wedge", 1, false);
    publish_many(broker.port(), "ordered/x", 300, 1);
    let all = poll_until_async(T, || {
        let n = seen.lock().unwrap().len();
        async move { n >= 300 }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(all, "{} of 300 while the other route is stuck", seen.len());
    let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "in order");
    release.send(()).unwrap();
    m.shutdown().await;
}

#[actix_rt::test]
async fn an_inline_route_runs_on_the_session_worker_in_order_and_survives_a_panic() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("in", &broker.url())).await.unwrap();
    m.wait_for_session("in", T).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads = Arc::new(Mutex::new(BTreeSet::new()));
    let (got, on) = (Arc::clone(&seen), Arc::clone(&threads));
    let route = m
        .route("inline/#")
        .session("in")
        .handle_inline(move |msg| {
            let t = std::thread::current();
            on.lock()
                .unwrap()
                .insert((format!("{:?}", t.id()), t.name().unwrap_or("").to_string()));
            let p = msg.payload_str().unwrap().to_string();
            if p == "boom" {
                panic!("handler bug");
            }
            got.lock().unwrap().push(p);
        })
        .await
        .unwrap();
    publish(broker.port(), "inline/x", "boom", 1, false);
    publish_many(broker.port(), "inline/x", 500, 1);
    let all = poll_until_async(T, || {
        let n = seen.lock().unwrap().len();
        async move { n >= 500 }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(all, "{} of 500", seen.len());
    let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "in arrival order");
    let threads = threads.lock().unwrap().clone();
    assert_eq!(
        threads.len(),
        1,
        "one session, one worker thread: {threads:?}"
    );
    let (id, name) = threads.into_iter().next().unwrap();
    assert_ne!(
        id,
        format!("{:?}", std::thread::current().id()),
        "not the caller's thread"
    );
    assert!(
        !name.starts_with("mqtt-route-callback"),
        "in place, not on the callback pool: {name}"
    );
    let stats = route.stats();
    assert_eq!((stats.handler_panics, stats.delivered), (1, 501));
    assert!(m.session("in").unwrap().is_ready());
    m.shutdown().await;
}
