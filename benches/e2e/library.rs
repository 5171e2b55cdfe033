//! The same scenarios through mqtt-sessions: a `SessionManager` on its own actix system
//! (one thread), messages taken with `listen`, `handle` or `handle_inline`, publishes
//! through `SessionHandle::publish`.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mqtt_sessions::{Message, Publish, QoS, SessionHandle, SessionManager, SessionOptions};

use crate::common::{payload, rss_kb, session_topic, threads, Shared, FILTER};
use crate::raw::SessionsResult;
use crate::SubscriberThread;

/// Capacity of the benchmark's route queue (the default is 100).
pub(crate) const ROUTE_CAPACITY: usize = 1024;

/// How the subscribing side takes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumer {
    /// `manager.route(FILTER).qos(..).capacity(..).listen()`, received by a task on the
    /// same actix system.
    Listen,
    /// `manager.route(FILTER).qos(..).capacity(..).handle(f)`: `f` runs on the shared
    /// pool of callback threads.
    Handle,
    /// `manager.route(FILTER).qos(..).handle_inline(f)`: `f` runs on the session's worker,
    /// inside its dispatch, as the raw subscriber records in its poll loop.
    Inline,
}

fn options(name: &str, url: &str, tag: &str) -> SessionOptions {
    SessionOptions::new(name, url).client_id(format!("{tag}-{name}"))
}

/// One session subscribed through one route on [`FILTER`] at `qos`.
pub(crate) fn spawn_subscriber(
    url: String,
    qos: QoS,
    consumer: Consumer,
    tag: String,
    shared: Shared,
) -> SubscriberThread {
    SubscriberThread::spawn(move |ready, stop| {
        actix_rt::System::new().block_on(async move {
            let m = SessionManager::new().expect("manager");
            m.add_session(options("sub", &url, &tag))
                .await
                .expect("add_session");
            m.wait_for_session("sub", Duration::from_secs(30))
                .await
                .expect("subscriber ready");
            let route = m.route(FILTER).qos(qos).capacity(ROUTE_CAPACITY);
            match consumer {
                Consumer::Listen => {
                    let listener = route.listen().await.expect("listen");
                    let _ = ready.send(());
                    let consume = async {
                        while let Some(msg) = listener.recv().await {
                            shared.record(&msg.payload);
                        }
                    };
                    tokio::select! {
                        _ = consume => {}
                        _ = stop => {}
                    }
                    shared.set_dropped(listener.route().stats().dropped_full);
                    drop(listener);
                }
                Consumer::Handle | Consumer::Inline => {
                    let s = shared.clone();
                    let record = move |msg: &Message| s.record(&msg.payload);
                    let route = if consumer == Consumer::Handle {
                        route.handle(record).await
                    } else {
                        route.handle_inline(record).await
                    }
                    .expect("handle");
                    let _ = ready.send(());
                    let _ = stop.await;
                    shared.set_dropped(route.stats().dropped_full);
                    drop(route);
                }
            }
            if let Ok(h) = m.session("sub") {
                let mt = h.metrics();
                shared.set_diag(format!(
                    "session received {}, connection attempts {}, reconnects {}, errors {}",
                    mt.messages_received,
                    mt.connection_attempts,
                    mt.reconnects,
                    mt.connection_errors
                ));
            }
            m.shutdown().await;
        });
    })
}

/// `n` sessions on a manager with `workers` worker threads, session `s{i}` subscribed
/// through its own route, `manager.route(`[`session_topic`]`(i)).session("s{i}")
/// .qos(..).capacity(..)`, then `consumer`: `listen()`, each listener received by its own
/// task on the manager's actix system (the application's thread; the sessions' I/O runs
/// on the workers), or `handle_inline(f)`, recording on the session's worker (`Handle`
/// is not a variant of this scenario).
pub(crate) fn spawn_session_subscribers(
    url: String,
    qos: QoS,
    n: u32,
    workers: usize,
    consumer: Consumer,
    tag: String,
    shared: Shared,
) -> SubscriberThread {
    SubscriberThread::spawn(move |ready, stop| {
        actix_rt::System::new().block_on(async move {
            let m = SessionManager::builder()
                .workers(workers)
                .build()
                .expect("manager");
            for i in 0..n {
                m.add_session(options(&format!("s{i}"), &url, &tag))
                    .await
                    .expect("add_session");
            }
            m.wait_for_all_sessions(Duration::from_secs(60))
                .await
                .expect("subscribers ready");
            let mut listeners = Vec::new();
            let mut routes = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..n {
                let route = m
                    .route(&session_topic(i))
                    .session(&format!("s{i}"))
                    .qos(qos)
                    .capacity(ROUTE_CAPACITY);
                if consumer == Consumer::Inline {
                    let s = shared.clone();
                    let route = route
                        .handle_inline(move |msg| s.record(&msg.payload))
                        .await
                        .expect("handle_inline");
                    routes.push(route);
                    continue;
                }
                let listener = route.listen().await.expect("listen");
                let listener = Rc::new(listener);
                let (l, s) = (Rc::clone(&listener), shared.clone());
                tasks.push(actix_rt::spawn(async move {
                    while let Some(msg) = l.recv().await {
                        s.record(&msg.payload);
                    }
                }));
                listeners.push(listener);
            }
            let _ = ready.send(());
            let _ = stop.await;
            for t in &tasks {
                t.abort();
            }
            shared.set_dropped(
                listeners
                    .iter()
                    .map(|l| l.route())
                    .chain(&routes)
                    .map(|r| r.stats().dropped_full)
                    .sum(),
            );
            let (mut received, mut reconnects) = (0, 0);
            for i in 0..n {
                if let Ok(h) = m.session(&format!("s{i}")) {
                    let mt = h.metrics();
                    received += mt.messages_received;
                    reconnects += mt.reconnects;
                }
            }
            shared.set_diag(format!(
                "{n} sessions on {workers} worker(s): sessions received {received}, reconnects {reconnects}"
            ));
            for t in tasks {
                let _ = t.await;
            }
            drop(listeners);
            drop(routes);
            m.shutdown().await;
        });
    })
}

/// Where a publishing session keeps its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// In memory.
    None,
    /// A store, clean session.
    Clean,
    /// A store, persistent session (packet ids and PUBRECs on disk too).
    Persistent,
}

/// One session publishing at `qos` flat out for `duration`, keeping `window` publishes
/// outstanding (each completes on PUBACK / PUBCOMP): completions per second.
pub(crate) fn publish(
    url: &str,
    duration: Duration,
    window: usize,
    tag: &str,
    qos: QoS,
    store: Store,
) -> f64 {
    let (url, tag) = (url.to_string(), tag.to_string());
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("store directory");
            let mut builder = SessionManager::builder();
            if store != Store::None {
                builder = builder.store(dir.path().join("store"));
            }
            let m = builder.build().expect("manager");
            let mut o = options("p", &url, &tag);
            o.connect.clean_session = store != Store::Persistent;
            let s = m.add_session(o).await.expect("add_session");
            s.wait_ready(Duration::from_secs(30)).await.expect("ready");
            let done = publish_loop(&s, duration, window, qos).await;
            m.shutdown().await;
            done as f64 / duration.as_secs_f64()
        })
    })
    .join()
    .expect("publisher thread")
}

/// Publishes at `qos` through `s` flat out for `duration`, keeping `window` publishes
/// outstanding; returns how many completed (PUBACK / PUBCOMP).
async fn publish_loop(s: &SessionHandle, duration: Duration, window: usize, qos: QoS) -> u64 {
    let deadline = Instant::now() + duration;
    let mut seq = 0;
    let mut done = 0u64;
    let mut inflight = FuturesUnordered::new();
    while Instant::now() < deadline {
        while inflight.len() < window {
            inflight.push(s.publish(Publish::new("bench/0/data", payload(0, seq)).qos(qos)));
            seq += 1;
        }
        match inflight.next().await {
            Some(Ok(())) => done += 1,
            Some(Err(e)) => tracing::warn!(error = %e, "publish failed"),
            None => {}
        }
    }
    done
}

/// As [`publish`] (no store), with the publishing loop on the session's own worker
/// (`SessionHandle::arbiter`): each publish reaches the session's mailbox and comes back
/// with no thread crossing, as from a callback or an actor on that worker.
pub(crate) fn publish_on_worker(
    url: &str,
    duration: Duration,
    window: usize,
    tag: &str,
    qos: QoS,
) -> f64 {
    let (url, tag) = (url.to_string(), tag.to_string());
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let m = SessionManager::new().expect("manager");
            let s = m
                .add_session(options("p", &url, &tag))
                .await
                .expect("add_session");
            s.wait_ready(Duration::from_secs(30)).await.expect("ready");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let on_worker = s.clone();
            assert!(
                s.arbiter().spawn(async move {
                    let done = publish_loop(&on_worker, duration, window, qos).await;
                    let _ = tx.send(done);
                }),
                "the session's worker is running"
            );
            let done = rx.await.expect("the publishing task reports");
            m.shutdown().await;
            done as f64 / duration.as_secs_f64()
        })
    })
    .join()
    .expect("publisher thread")
}

/// How the sessions of the many-sessions scenario start (see [`sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionsPlan {
    /// `add_session` for all, then `wait_for_all_sessions`.
    Storm,
    /// At most this many sessions added and not yet ready at any time (a limit the
    /// application imposes; the library has none).
    Bounded(usize),
    /// As [`Storm`](Self::Storm), then every session `s{i}` gets its own route on
    /// [`session_topic`]`(i)`, scoped to it, taken with `consumer` (`Handle` or `Inline`;
    /// at most [`ROUTES_IN_FLIGHT`] registrations awaited at once, each waiting for its
    /// SUBACK).
    RouteEach(Consumer),
}

/// Route registrations awaited at once by [`SessionsPlan::RouteEach`].
const ROUTES_IN_FLIGHT: usize = 64;

/// `n` idle sessions started as `plan` says; ready once every session is connected (and,
/// with a route each, every route subscribed). RSS is read 1 s later. With a route each,
/// session `s0` then publishes one QoS 1 message to every session's topic, and the
/// threads are counted once every route's callback has run (or after `timeout`): the
/// pool of callback threads grows only when callbacks run.
pub(crate) fn sessions(
    url: &str,
    n: usize,
    plan: SessionsPlan,
    timeout: Duration,
) -> SessionsResult {
    let url = url.to_string();
    let tag = crate::common::run_tag();
    actix_rt::System::new().block_on(async move {
        let m = SessionManager::new().expect("manager");
        let rss_before_kb = rss_kb();
        let start = Instant::now();
        let mut note;
        match plan {
            SessionsPlan::Storm | SessionsPlan::RouteEach(_) => {
                for i in 0..n {
                    m.add_session(options(&format!("s{i}"), &url, &tag))
                        .await
                        .expect("add_session");
                }
                note = format!(
                    "add_session x{n} took {:.2} s, then wait_for_all_sessions",
                    start.elapsed().as_secs_f64()
                );
                if let Err(e) = m.wait_for_all_sessions(timeout).await {
                    note.push_str(&format!("; {}", first_line(&e.to_string())));
                }
            }
            SessionsPlan::Bounded(limit) => {
                let ready = Arc::new(AtomicU64::new(0));
                let mut pending = FuturesUnordered::new();
                for i in 0..n {
                    if pending.len() >= limit {
                        pending.next().await;
                    }
                    let h = m
                        .add_session(options(&format!("s{i}"), &url, &tag))
                        .await
                        .expect("add_session");
                    let ready = Arc::clone(&ready);
                    pending.push(async move {
                        if h.wait_ready(timeout).await.is_ok() {
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                while pending.next().await.is_some() {}
                note = format!("at most {limit} sessions connecting at once (application-side)");
            }
        }
        let handled = Arc::new(AtomicU64::new(0));
        let mut routes = Vec::new();
        if let SessionsPlan::RouteEach(consumer) = plan {
            let sessions_ready_s = start.elapsed().as_secs_f64();
            let mut pending = FuturesUnordered::new();
            let mut registered = Vec::with_capacity(n);
            for i in 0..n {
                if pending.len() >= ROUTES_IN_FLIGHT {
                    registered.extend(pending.next().await);
                }
                let route = m
                    .route(&session_topic(i as u32))
                    .session(&format!("s{i}"));
                let h = Arc::clone(&handled);
                let count = move |_: &Message| {
                    h.fetch_add(1, Ordering::Relaxed);
                };
                pending.push(async move {
                    match consumer {
                        Consumer::Handle => route.handle(count).await,
                        Consumer::Inline => route.handle_inline(count).await,
                        Consumer::Listen => unreachable!("no scenario has a listen route each"),
                    }
                });
            }
            while let Some(r) = pending.next().await {
                registered.push(r);
            }
            let failed = registered.iter().filter(|r| r.is_err()).count();
            routes = registered.into_iter().flatten().collect();
            note.push_str(&format!(
                "; all ready after {sessions_ready_s:.2} s, then {} routes subscribed ({failed} failed)",
                routes.len()
            ));
        }
        let ready_s = start.elapsed().as_secs_f64();
        let ready = m
            .status()
            .keys()
            .filter(|name| m.session(name).is_ok_and(|h| h.is_ready()))
            .count();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after_kb = rss_kb();
        let idle_threads = threads();
        if !routes.is_empty() {
            let (took, failed, delivered) = one_message_each(&m, n, &handled, timeout).await;
            note.push_str(&format!(
                "; threads {idle_threads} idle; one QoS 1 message to each ({failed} publishes \
                 failed): {delivered} handled in {took:.2} s"
            ));
        }
        let threads = threads();
        drop(routes);
        SessionsResult {
            sessions: n,
            ready,
            ready_s,
            rss_before_kb,
            rss_after_kb,
            threads,
            note,
        }
    })
}

/// Session `s0` publishes one QoS 1 message to every session's topic (at most
/// [`ROUTES_IN_FLIGHT`] outstanding), then this waits until `handled` counts `n` (polled
/// every 10 ms) or `timeout` passed: seconds taken, publishes failed, messages handled.
async fn one_message_each(
    m: &SessionManager,
    n: usize,
    handled: &AtomicU64,
    timeout: Duration,
) -> (f64, usize, u64) {
    let start = Instant::now();
    let s0 = m.session("s0").expect("session s0");
    let mut inflight = FuturesUnordered::new();
    let mut failed = 0;
    for i in 0..n {
        if inflight.len() >= ROUTES_IN_FLIGHT {
            failed += usize::from(matches!(inflight.next().await, Some(Err(_))));
        }
        let p = Publish::new(session_topic(i as u32), payload(0, i as u64)).qos(QoS::AtLeastOnce);
        inflight.push(s0.publish(p));
    }
    while let Some(r) = inflight.next().await {
        failed += usize::from(r.is_err());
    }
    while handled.load(Ordering::Relaxed) < n as u64 && start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let handled = handled.load(Ordering::Relaxed);
    (start.elapsed().as_secs_f64(), failed, handled)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(160).collect()
}
