//! A bounded channel of messages from every session (`listen`), and one from a single
//! session (`listen_to`), with route statistics.
//!
//! ```text
//! cargo run --example listen -- mqtt://127.0.0.1:1883
//! # then, in another shell:
//! mosquitto_pub -t sensors/kitchen/temp -m 21.5 -q 1
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::time::Duration;

use mqtt_sessions::{QoS, SessionManager, SessionOptions};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let manager = SessionManager::new()?;
    manager
        .add_session(SessionOptions::new("gateway", url.as_str()))
        .await?;
    manager
        .wait_for_session("gateway", Duration::from_secs(10))
        .await?;

    // Every session, QoS 1 (the default): nothing is acknowledged before it is queued here.
    let sensors = manager.listen("sensors/#").await?;
    // One session, QoS 0, a small queue: overflow is dropped and counted.
    let alerts = manager
        .route("alerts/#")
        .session("gateway")
        .qos(QoS::AtMostOnce)
        .capacity(10)
        .listen()
        .await?;

    println!("listening on sensors/# and alerts/# (Ctrl-C to stop)");
    loop {
        tokio::select! {
            Some(msg) = sensors.recv() => println!("[sensors] {} {} = {}", msg.session, msg.topic, msg.payload_str().unwrap_or("<binary>")),
            Some(msg) = alerts.recv() => println!("[alerts] {} {}", msg.topic, msg.payload_str().unwrap_or("<binary>")),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("sensors route: {:?}", sensors.route().stats());
    manager.shutdown().await;
    Ok(())
}
