//! A paced QoS 1 publisher on a raw rumqttc client (independent of the crate under test).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Publishes QoS 1 messages at `rate` per second to each of `topics` (payload: the index
/// from 0) on its own thread and runtime, until `n` were sent (`Some(n)`) or `stop` is set;
/// then waits for every PUBACK and returns how many indices it sent.
pub fn paced_publisher(
    port: u16,
    topics: &[&str],
    n: Option<usize>,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> usize {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = rumqttc::MqttOptions::new(
            format!("paced-publisher-{}", fastrand_id()),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(100);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acks = Arc::clone(&acked);
        let poller = tokio::spawn(async move {
            loop {
                if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                    el.poll().await.unwrap()
                {
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        let mut sent = 0;
        while n.is_none_or(|n| sent < n) && !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for t in &topics {
                client
                    .publish(
                        t.as_str(),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        sent.to_string(),
                    )
                    .await
                    .unwrap();
            }
            sent += 1;
        }
        let want = sent * topics.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::Relaxed) < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {want} PUBACKs",
                acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await; // polling period
        }
        poller.abort();
        sent
    })
}

fn fastrand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
