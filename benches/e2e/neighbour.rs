//! The slow-neighbour scenario: what a slow `handle_inline` callback costs the other
//! sessions on its worker.
//!
//! One manager with one worker (`workers(1)`, so that every session shares it) carries
//! `n` sessions `s{i}`, each taking the messages of [`session_topic`]`(i)` with
//! `handle_inline` and recording them in the callback (as the raw subscriber records in
//! its poll loop), and one more session, the neighbour, subscribed to [`TOPIC`] and fed
//! by a raw publisher of its own at [`RATE`] msg/s (QoS 0, on the manager's thread, not
//! the worker). The bench's publisher sends at the scenario's rate, spread over the `n`
//! sessions; their publish→route latency is the figure. The variants differ only in the
//! neighbour's route:
//!
//! - `NeighbourQuiet` (the reference): `handle_inline`, counting only; the same traffic
//!   reaches the worker;
//! - `NeighbourSpinInline`: `handle_inline` spinning [`SPIN`] per message on the worker,
//!   busy [`RATE`] × [`SPIN`] = 20 % of the time: a message for another session that
//!   arrives meanwhile waits for the spin to end;
//! - `NeighbourSpinHandle`: the same spin in `handle`, on the shared pool of callback
//!   threads, off the worker (what the library's docs advise for such a callback).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_sessions::{Message, QoS, SessionManager, SessionOptions};

use crate::broker::Broker;
use crate::common::{payload, session_topic, Shared};
use crate::sample::Variant;
use crate::SubscriberThread;

/// The neighbour's topic.
const TOPIC: &str = "neighbour/slow";

/// Messages per second the neighbour receives.
const RATE: u32 = 200;

/// How long the slow neighbour's callback spins per message.
const SPIN: Duration = Duration::from_millis(1);

/// Busy-waits `d` on the calling thread (a callback doing CPU work, not sleeping).
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The subscribing side of one run of `variant` (one of the `Neighbour*` variants): `n`
/// sessions and the neighbour on one worker, the neighbour's publisher running; ready
/// once every route is subscribed and that publisher connected.
pub(crate) fn spawn(
    broker: &Broker,
    variant: Variant,
    qos: QoS,
    n: u32,
    tag: String,
    shared: Shared,
) -> SubscriberThread {
    let (url, port) = (broker.url(), broker.port());
    SubscriberThread::spawn(move |ready, stop| {
        actix_rt::System::new().block_on(async move {
            let m = SessionManager::builder()
                .workers(1)
                .build()
                .expect("manager");
            let options =
                |name: &str| SessionOptions::new(name, &url).client_id(format!("{tag}-{name}"));
            for i in 0..n {
                m.add_session(options(&format!("s{i}")))
                    .await
                    .expect("add_session");
            }
            m.add_session(options("neighbour"))
                .await
                .expect("add_session");
            m.wait_for_all_sessions(Duration::from_secs(60))
                .await
                .expect("sessions ready");
            let mut routes = Vec::new();
            for i in 0..n {
                let s = shared.clone();
                let route = m
                    .route(&session_topic(i))
                    .session(&format!("s{i}"))
                    .qos(qos)
                    .handle_inline(move |msg| s.record(&msg.payload))
                    .await
                    .expect("handle_inline");
                routes.push(route);
            }
            let handled = Arc::new(AtomicU64::new(0));
            let h = Arc::clone(&handled);
            let slow = variant != Variant::NeighbourQuiet;
            let callback = move |_: &Message| {
                if slow {
                    spin(SPIN);
                }
                h.fetch_add(1, Ordering::Relaxed);
            };
            let neighbour = m
                .route(TOPIC)
                .session("neighbour")
                .qos(QoS::AtMostOnce)
                .capacity(crate::library::ROUTE_CAPACITY);
            let neighbour = if variant == Variant::NeighbourSpinHandle {
                neighbour.handle(callback).await
            } else {
                neighbour.handle_inline(callback).await
            }
            .expect("neighbour route");
            let (client, _, poller) =
                crate::raw::connected_publisher(&format!("{tag}-neighbour-pub"), port).await;
            let feeder = actix_rt::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
                let mut seq = 0;
                loop {
                    tick.tick().await;
                    let p = payload(0, seq);
                    if client
                        .publish(TOPIC, rumqttc::QoS::AtMostOnce, false, p)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    seq += 1;
                }
            });
            let start = Instant::now();
            let _ = ready.send(());
            let _ = stop.await;
            feeder.abort();
            poller.abort();
            let secs = start.elapsed().as_secs_f64();
            let handled = handled.load(Ordering::Relaxed);
            shared.set_diag(format!(
                "{n} sessions and the neighbour on 1 worker; the neighbour handled {handled} \
                 messages ({:.0}/s{})",
                handled as f64 / secs,
                if slow {
                    format!(
                        ", spinning {:.0} % of the time",
                        handled as f64 * SPIN.as_secs_f64() / secs * 100.0
                    )
                } else {
                    String::new()
                }
            ));
            drop(neighbour);
            drop(routes);
            m.shutdown().await;
        });
    })
}
