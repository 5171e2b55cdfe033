//! The same scenarios through mqtt-sessions: a `SessionManager` on its own actix system
//! (one thread), messages taken with `listen` or `handle`, publishes through
//! `SessionHandle::publish`.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mqtt_sessions::{Publish, QoS, SessionManager, SessionOptions};

use crate::common::{payload, rss_kb, session_topic, Shared, FILTER};
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
    /// `manager.route(FILTER).qos(..).capacity(..).handle(f)`: `f` runs on the route's
    /// own thread.
    Handle,
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
                Consumer::Handle => {
                    let s = shared.clone();
                    let route = route
                        .handle(move |msg| s.record(&msg.payload))
                        .await
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
/// .qos(..).capacity(..).listen()`; each listener is received by its own task on the
/// manager's actix system (the application's thread; the sessions' I/O runs on the
/// workers).
pub(crate) fn spawn_session_subscribers(
    url: String,
    qos: QoS,
    n: u32,
    workers: usize,
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
            let mut tasks = Vec::new();
            for i in 0..n {
                let listener = m
                    .route(&session_topic(i))
                    .session(&format!("s{i}"))
                    .qos(qos)
                    .capacity(ROUTE_CAPACITY)
                    .listen()
                    .await
                    .expect("listen");
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
                    .map(|l| l.route().stats().dropped_full)
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
            let start = Instant::now();
            let deadline = start + duration;
            let mut seq = 0;
            let mut done = 0u64;
            let mut inflight = FuturesUnordered::new();
            let publish = |seq| {
                let s = s.clone();
                async move {
                    s.publish(Publish::new("bench/0/data", payload(0, seq)).qos(qos))
                        .await
                }
            };
            while Instant::now() < deadline {
                while inflight.len() < window {
                    inflight.push(publish(seq));
                    seq += 1;
                }
                match inflight.next().await {
                    Some(Ok(())) => done += 1,
                    Some(Err(e)) => tracing::warn!(error = %e, "publish failed"),
                    None => {}
                }
            }
            drop(inflight);
            m.shutdown().await;
            done as f64 / duration.as_secs_f64()
        })
    })
    .join()
    .expect("publisher thread")
}

/// `n` idle sessions: `add_session` for all, then `wait_for_all_sessions` (`bounded`:
/// `None`), or at most `bounded` sessions added and not yet ready at any time (a limit
/// the application imposes; the library has none yet).
pub(crate) fn sessions(
    url: &str,
    n: usize,
    bounded: Option<usize>,
    timeout: Duration,
) -> SessionsResult {
    let url = url.to_string();
    let tag = crate::common::run_tag();
    actix_rt::System::new().block_on(async move {
        let m = SessionManager::new().expect("manager");
        let rss_before_kb = rss_kb();
        let start = Instant::now();
        let mut note;
        match bounded {
            None => {
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
            Some(limit) => {
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
        let ready_s = start.elapsed().as_secs_f64();
        let ready = m
            .status()
            .keys()
            .filter(|name| m.session(name).is_ok_and(|h| h.is_ready()))
            .count();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after_kb = rss_kb();
        SessionsResult {
            sessions: n,
            ready,
            ready_s,
            rss_before_kb,
            rss_after_kb,
            note,
        }
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(160).collect()
}
