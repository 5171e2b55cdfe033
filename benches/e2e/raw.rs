//! Raw rumqttc, wired as a user would: each client an `AsyncClient` and its own
//! `EventLoop`, polled in its own tokio task; the subscriber counts in its poll loop.
//!
//! The publishers of every fan-in and latency scenario come from here in *all* variants
//! (raw and mqtt-sessions alike), so a scenario's variants differ only in the subscribing
//! side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;

use crate::common::{
    now_ns, payload, rss_kb, session_topic, thread_cpu_ticks, threads, Shared, FILTER,
};
use crate::SubscriberThread;

/// Options of every raw client: the settings mqtt-sessions uses by default (keep-alive
/// 60 s, TCP_NODELAY on), so the comparison is of the code, not of the configuration.
pub(crate) fn client(id: &str, port: u16, cap: usize) -> (AsyncClient, EventLoop) {
    client_with(MqttOptions::new(id, "127.0.0.1", port), cap)
}

/// [`client`]'s settings (keep-alive 60 s, TCP_NODELAY on) over `mo`'s own, with a
/// request channel of `cap`.
pub(crate) fn client_with(mut mo: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    mo.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(mo, cap);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// How the publishers run.
#[derive(Debug, Clone)]
pub(crate) struct PubPlan {
    /// Broker port.
    pub(crate) port: u16,
    /// Number of publishing clients.
    pub(crate) publishers: u32,
    /// Their QoS.
    pub(crate) qos: QoS,
    /// How long they publish.
    pub(crate) duration: Duration,
    /// Messages per second per publisher; `None`: as fast as they can.
    pub(crate) rate: Option<u32>,
    /// Client-id prefix.
    pub(crate) tag: String,
    /// `None`: publisher `i` publishes on `bench/{i}/data`; `Some(n)`: message `seq` of
    /// publisher `i` goes to `bench/{(i + seq) % n}` (see [`session_topic`]), spreading
    /// every publisher over `n` topics.
    pub(crate) topics: Option<u32>,
}

/// What the publishers did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PubResult {
    /// Messages written (QoS 0) or acknowledged by the broker (QoS 1).
    pub(crate) published: u64,
    /// When publishing started (see [`now_ns`]).
    pub(crate) start_ns: u64,
    /// User + system CPU time of the publishers' thread, from its start to its end
    /// (clock ticks): the publishers run in this process, and the CPU figure of a
    /// variant leaves them out.
    pub(crate) cpu_ticks: u64,
}

/// Connects the publishers, publishes for `plan.duration`, waits until every QoS 1
/// publish is acknowledged (QoS 0: written). Blocks; runs on its own thread and
/// current-thread runtime, which starts no other thread (no blocking pool: the broker's
/// address is an IP literal, so connecting resolves nothing), so that thread's CPU time
/// is all the publishers' CPU time.
pub(crate) fn run_publishers(plan: PubPlan) -> PubResult {
    std::thread::spawn(move || {
        let before = thread_cpu_ticks();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("publisher runtime");
        let mut r = rt.block_on(publishers(plan));
        drop(rt);
        r.cpu_ticks = thread_cpu_ticks().saturating_sub(before);
        r
    })
    .join()
    .expect("publisher thread")
}

async fn publishers(plan: PubPlan) -> PubResult {
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let mut pollers = Vec::new();
    for i in 0..plan.publishers {
        let (c, mut el) = client(&format!("{}-pub{i}", plan.tag), plan.port, 100);
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let (sent, acked) = (Arc::clone(&sent), Arc::clone(&acked));
        pollers.push(tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(up) = up.take() {
                            let _ = up.send(());
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "publisher connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
        up_rx.await.expect("publisher connected");
        clients.push(c);
    }
    let start = Instant::now();
    let start_ns = now_ns();
    let deadline = start + plan.duration;
    let mut loops = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let topics: Vec<String> = match plan.topics {
            None => vec![format!("bench/{i}/data")],
            Some(n) => (0..n.max(1)).map(session_topic).collect(),
        };
        let (qos, rate) = (plan.qos, plan.rate);
        loops.push(tokio::spawn(async move {
            let mut tick = rate.map(|r| {
                let mut t = tokio::time::interval(Duration::from_secs(1) / r.max(1));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut seq = 0u64;
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let p = payload(i as u32, seq);
                let topic = &topics[(i + seq as usize) % topics.len()];
                if c.publish(topic.as_str(), qos, false, p).await.is_err() {
                    break;
                }
                seq += 1;
            }
            seq
        }));
    }
    let mut issued = 0;
    for l in loops {
        issued += l.await.expect("publish loop");
    }
    let done = match plan.qos {
        QoS::AtMostOnce => &sent,
        _ => &acked,
    };
    let settle = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < issued && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in &clients {
        let _ = c.try_disconnect();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for p in pollers {
        p.abort();
    }
    PubResult {
        published: done.load(Ordering::Relaxed),
        start_ns,
        cpu_ticks: 0,
    }
}

/// The raw subscriber: one client subscribed to [`FILTER`] at `qos`, recording every
/// PUBLISH in its poll loop (rumqttc acknowledges QoS 1 itself).
pub(crate) fn spawn_subscriber(
    port: u16,
    qos: QoS,
    tag: String,
    shared: Shared,
    hop: bool,
) -> SubscriberThread {
    SubscriberThread::spawn(move |ready, mut stop| {
        // `hop`: the poll loop hands each payload to a consumer thread (its own
        // current-thread runtime) through a bounded channel, as an application that
        // consumes away from its event loop would.
        let (hop_tx, consumer) = if hop {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1024);
            let s = shared.clone();
            let consumer = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("consumer runtime")
                    .block_on(async move {
                        while let Some(p) = rx.recv().await {
                            s.record(&p);
                        }
                    });
            });
            (Some(tx), Some(consumer))
        } else {
            (None, None)
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("subscriber runtime")
            .block_on(async move {
                let (c, mut el) = client(&format!("{tag}-sub"), port, 100);
                c.subscribe(FILTER, qos).await.expect("subscribe");
                let mut ready = Some(ready);
                let mut errors = 0u64;
                loop {
                    let ev = tokio::select! {
                        ev = el.poll() => ev,
                        _ = &mut stop => break,
                    };
                    match ev {
                        Ok(Event::Incoming(Packet::Publish(p))) => match &hop_tx {
                            Some(tx) => {
                                let _ = tx.send(p.payload).await;
                            }
                            None => shared.record(&p.payload),
                        },
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            errors += 1;
                            tracing::warn!(error = %e, "raw subscriber connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                shared.set_diag(format!("connection errors {errors}"));
                let _ = c.try_disconnect();
            });
        if let Some(consumer) = consumer {
            let _ = consumer.join();
        }
    })
}

/// `n` raw subscribers, client `i` subscribed to [`session_topic`]`(i)` at `qos`, as a
/// user would write many clients: a multi-thread tokio runtime (one worker per core, what
/// `#[tokio::main]` gives), each client's `EventLoop` polled in its own task, recording
/// every PUBLISH in its poll loop. Ready once every client has its SUBACK.
pub(crate) fn spawn_subscribers_multi_thread(
    port: u16,
    qos: QoS,
    n: u32,
    tag: String,
    shared: Shared,
) -> SubscriberThread {
    SubscriberThread::spawn(move |ready, stop| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("subscriber runtime")
            .block_on(async move {
                let subacked = Arc::new(AtomicU64::new(0));
                let errors = Arc::new(AtomicU64::new(0));
                let (stop_all, stopped) = tokio::sync::watch::channel(false);
                let mut tasks = Vec::new();
                for i in 0..n {
                    let (c, mut el) = client(&format!("{tag}-sub{i}"), port, 100);
                    c.subscribe(session_topic(i), qos).await.expect("subscribe");
                    let (shared, subacked, errors) =
                        (shared.clone(), Arc::clone(&subacked), Arc::clone(&errors));
                    let mut stopped = stopped.clone();
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let ev = tokio::select! {
                                ev = el.poll() => ev,
                                _ = stopped.changed() => break,
                            };
                            match ev {
                                Ok(Event::Incoming(Packet::Publish(p))) => {
                                    shared.record(&p.payload);
                                }
                                Ok(Event::Incoming(Packet::SubAck(_))) => {
                                    subacked.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(error = %e, "raw subscriber connection failed");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            }
                        }
                        let _ = c.try_disconnect();
                    }));
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                while subacked.load(Ordering::Relaxed) < u64::from(n) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if subacked.load(Ordering::Relaxed) >= u64::from(n) {
                    let _ = ready.send(());
                }
                let _ = stop.await;
                let _ = stop_all.send(true);
                for t in tasks {
                    let _ = t.await;
                }
                shared.set_diag(format!(
                    "{n} clients on a multi-thread runtime ({} workers), connection errors {}",
                    tokio::runtime::Handle::current().metrics().num_workers(),
                    errors.load(Ordering::Relaxed)
                ));
            });
    })
}

/// A raw QoS 1 publisher, connected: its client, the PUBACKs counted so far, and the task
/// polling its event loop (abort it when done; it retries a failed connection after
/// 100 ms).
pub(crate) async fn connected_publisher(
    id: &str,
    port: u16,
) -> (AsyncClient, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let (c, mut el) = client(id, port, 100);
    let acked = Arc::new(AtomicU64::new(0));
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let a = Arc::clone(&acked);
    let id = id.to_string();
    let poller = tokio::spawn(async move {
        let mut up = Some(up_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(up) = up.take() {
                        let _ = up.send(());
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(publisher = %id, error = %e, "publisher: connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    up_rx.await.expect("publisher connected");
    (c, acked, poller)
}

/// One QoS 1 publisher flat out for `duration`: PUBACKs per second.
pub(crate) fn publish_qos1(port: u16, duration: Duration, tag: &str) -> f64 {
    let tag = tag.to_string();
    let acked = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let (c, acked, poller) = connected_publisher(&format!("{tag}-p"), port).await;
                let deadline = Instant::now() + duration;
                let mut seq = 0;
                while Instant::now() < deadline {
                    let p = payload(0, seq);
                    if c.publish("bench/0/data", QoS::AtLeastOnce, false, p)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    seq += 1;
                }
                let n = acked.load(Ordering::Relaxed);
                poller.abort();
                n
            })
    })
    .join()
    .expect("publisher thread");
    acked as f64 / duration.as_secs_f64()
}

/// Result of a "many idle sessions" run (printed as JSON by the child process).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct SessionsResult {
    /// Sessions asked for.
    pub(crate) sessions: usize,
    /// Sessions ready (connected) in the end.
    pub(crate) ready: usize,
    /// Seconds from the first connect until all were ready (or the timeout).
    pub(crate) ready_s: f64,
    /// Resident memory before creating any session, kB.
    pub(crate) rss_before_kb: u64,
    /// Resident memory with every session connected and idle, kB.
    pub(crate) rss_after_kb: u64,
    /// Threads of the process at the end (see [`crate::common::threads`]).
    pub(crate) threads: u64,
    /// Free text (e.g. how the sessions were started).
    pub(crate) note: String,
}

/// `n` raw clients, at most `concurrency` connecting at once (mosquitto's listen backlog
/// is 100), each then polled forever in its own task on a multi-thread runtime (what
/// `#[tokio::main]` gives).
pub(crate) fn sessions(
    port: u16,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> SessionsResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tag = crate::common::run_tag();
    rt.block_on(async move {
        let rss_before_kb = rss_kb();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let ready = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        for i in 0..n {
            let (sem, ready) = (Arc::clone(&sem), Arc::clone(&ready));
            let id = format!("{tag}-s{i}");
            tokio::spawn(async move {
                let permit = sem.acquire_owned().await.expect("semaphore");
                let (client, mut el) = client(&id, port, 10);
                let mut permit = Some(permit);
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if permit.take().is_some() {
                                ready.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                    // Keeps the request side alive, as an application would.
                    let _ = &client;
                }
            });
        }
        while (ready.load(Ordering::Relaxed) as usize) < n && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready_s = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        SessionsResult {
            sessions: n,
            ready: ready.load(Ordering::Relaxed) as usize,
            ready_s,
            rss_before_kb,
            rss_after_kb: rss_kb(),
            threads: threads(),
            note: format!("{concurrency} connects in flight"),
        }
    })
}
