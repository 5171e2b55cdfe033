//! Quick start: two sessions, a subscription, a QoS 1 publish, events and a clean shutdown
//! (the Go original's README example, in Rust).
//!
//! Run against a broker (default `mqtt://127.0.0.1:1883`):
//!
//! ```text
//! cargo run --example quickstart -- mqtt://127.0.0.1:1883
//! MQTT_URL=mqtt://broker:1883 cargo run --example quickstart
//! ```

#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::time::Duration;

use mqtt_sessions::{EventKind, Publish, QoS, SessionManager, SessionOptions};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("MQTT_URL").ok())
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());

    let manager = SessionManager::new()?;
    let _connected = manager.on_event(EventKind::SessionConnected, |ev| {
        println!("[event] {}: {:?}", ev.session, ev.data);
    });

    // Two sessions on the same broker: a "device" and a "backend".
    let mut device = SessionOptions::new("device", url.as_str());
    device.reconnect.initial_delay = Duration::from_millis(500);
    let backend = SessionOptions::new("backend", url.as_str());
    manager.add_session(device).await?;
    let backend = manager.add_session(backend).await?;

    let messages = backend.messages();
    backend
        .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
        .await?;
    manager
        .wait_for_all_sessions(Duration::from_secs(10))
        .await?;
    println!("sessions: {:?}", manager.status());

    manager
        .publish(
            "device",
            Publish::new("devices/42/telemetry", r#"{"temp":21.5}"#).qos(QoS::AtLeastOnce),
        )
        .await?;
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), messages.recv()).await {
        println!(
            "{} received {} (QoS {}): {}",
            msg.session,
            msg.topic,
            msg.qos,
            msg.payload_str().unwrap_or("<binary>")
        );
    }
    println!("backend metrics: {:?}", backend.metrics());
    manager.shutdown().await;
    Ok(())
}
