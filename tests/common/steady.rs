//! A steady publisher on a raw rumqttc client (independent of the crate under test) that
//! rides out broker restarts, for tests that run traffic through them.
//!
//! Its session is persistent (clean session off, a fixed client id): after a restart the
//! broker still has its QoS 2 publishes that were received but not released, and rumqttc
//! re-sends what was not acknowledged (PUBLISH with its packet id, or PUBREL). So every
//! message it publishes at QoS ≥ 1 is, in the end, acknowledged by the broker once
//! (PUBACK at QoS 1, PUBCOMP at QoS 2), which [`SteadyPublisher::finish`] waits for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Publishes `0`, `1`, … (the sequence number as the payload) at one QoS, paced, on its
/// own thread and runtime, until [`finish`](Self::finish)ed.
pub struct SteadyPublisher {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    qos: u8,
}

impl SteadyPublisher {
    /// Starts publishing message `k` to `topic(k)` at `qos`, `rate` messages per second,
    /// as client `client_id` of the broker on 127.0.0.1:`port`.
    pub fn start(
        port: u16,
        client_id: &str,
        qos: u8,
        rate: u32,
        topic: impl Fn(u64) -> String + Send + 'static,
    ) -> SteadyPublisher {
        let (stop, sent, acked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (halt, count, acks) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&acked));
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(false);
        o.set_inflight(100);
        let level = match qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // A small request channel: while the broker is away, the pacing loop waits
                // instead of piling up requests (rumqttc keeps them for the next
                // connection either way).
                let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
                let done = Arc::clone(&acks);
                let poller = tokio::spawn(async move {
                    loop {
                        match el.poll().await {
                            Ok(rumqttc::Event::Incoming(
                                rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_),
                            )) => {
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            // The broker is restarting: the next poll reconnects. A pause
                            // between attempts, not synchronisation.
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut k = 0u64;
                while !halt.load(Ordering::Relaxed) {
                    tick.tick().await;
                    client
                        .publish(topic(k), level, false, k.to_string())
                        .await
                        .unwrap();
                    k += 1;
                    count.store(k, Ordering::Relaxed);
                }
                // Stopped: keep the event loop going until every QoS >= 1 message is
                // acknowledged, or the handle is gone (finished, or a failed test).
                while qos > 0 && done.load(Ordering::Relaxed) < k && Arc::strong_count(&halt) > 1 {
                    tokio::time::sleep(Duration::from_millis(10)).await; // polling period
                }
                poller.abort();
            });
        });
        SteadyPublisher {
            stop,
            sent,
            acked,
            qos,
        }
    }

    /// Messages published so far (handed to rumqttc).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Messages the broker acknowledged so far (QoS ≥ 1).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops publishing and waits (up to `timeout`) until the broker acknowledged every
    /// message (QoS ≥ 1). Returns `(sent, acknowledged)`. Its thread ends once every
    /// message is acknowledged, or when the publisher is dropped.
    pub async fn finish(self, timeout: Duration) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, acked, qos) = (Arc::clone(&self.sent), Arc::clone(&self.acked), self.qos);
        super::poll_until_async(timeout, || {
            let done = qos == 0 || acked.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed);
            async move { done }
        })
        .await;
        (self.sent(), self.acked())
    }
}

impl Drop for SteadyPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
