//! Mutual TLS: a session that verifies the broker with a CA file and proves its own
//! identity with a client certificate, subscribes, publishes one message to itself and
//! prints it.
//!
//! ```text
//! cargo run --example tls -- mqtts://broker.example:8883 ca.crt client.crt client.key
//! MQTT_URL=mqtts://10.0.0.5:8883 MQTT_CA=ca.crt MQTT_CERT=client.crt MQTT_KEY=client.key \
//!   MQTT_SERVER_NAME=broker.example cargo run --example tls
//! ```
//!
//! Arguments (or environment variables): broker URL (`MQTT_URL`), CA file (`MQTT_CA`),
//! client certificate (`MQTT_CERT`) and key (`MQTT_KEY`, PKCS#8, PKCS#1 or SEC1 PEM).
//! `MQTT_SERVER_NAME` sets the name the broker's certificate is checked against when the
//! URL's host is an address; `MQTT_USERNAME` / `MQTT_PASSWORD` add credentials.
//!
//! A matching mosquitto listener:
//!
//! ```text
//! listener 8883
//! cafile ca.crt
//! certfile server.crt
//! keyfile server.key
//! require_certificate true
//! ```

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example shows its results on the terminal"
)]

use std::time::Duration;

use mqtt_sessions::{EventKind, Publish, QoS, SessionManager, SessionOptions, TlsOptions};

fn arg_or_env(position: usize, var: &str) -> Option<String> {
    std::env::args()
        .nth(position)
        .or_else(|| std::env::var(var).ok())
}

#[actix::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let usage = "usage: cargo run --example tls -- URL CA_FILE CLIENT_CERT CLIENT_KEY";
    let url = arg_or_env(1, "MQTT_URL").unwrap_or_else(|| "mqtts://127.0.0.1:8883".into());
    let (Some(ca), Some(cert), Some(key)) = (
        arg_or_env(2, "MQTT_CA"),
        arg_or_env(3, "MQTT_CERT"),
        arg_or_env(4, "MQTT_KEY"),
    ) else {
        return Err(usage.into());
    };

    let mut opts = SessionOptions::new("mtls-demo", url.as_str());
    opts.tls = Some({
        let t = TlsOptions::new()
            .ca_file(ca)
            .client_cert(cert)
            .client_key(key);
        match std::env::var("MQTT_SERVER_NAME").ok() {
            Some(name) => t.server_name(name),
            None => t,
        }
    });
    if let (Ok(user), Ok(pass)) = (
        std::env::var("MQTT_USERNAME"),
        std::env::var("MQTT_PASSWORD"),
    ) {
        opts = opts.credentials(user, pass);
    }

    let manager = SessionManager::new()?;
    // Handshake failures (unknown CA, wrong host name, refused client certificate) arrive
    // here with kind `tls`; the session keeps retrying with backoff.
    let _failures = manager.on_event(EventKind::SessionDisconnected, |ev| {
        println!("[event] {}: {:?}", ev.session, ev.data);
    });
    // Files are read and checked here: a missing file or a key that does not match the
    // certificate is an error now, not at the first connect.
    let session = manager.add_session(opts).await?;
    let messages = session.messages();
    session.subscribe("demo/tls/#", QoS::AtLeastOnce).await?;
    manager
        .wait_for_session("mtls-demo", Duration::from_secs(15))
        .await?;
    println!("connected over mutual TLS to {url}");

    session
        .publish(Publish::new("demo/tls/hello", "hello over mutual TLS").qos(QoS::AtLeastOnce))
        .await?;
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), messages.recv()).await {
        println!("received on {}: {:?}", msg.topic, msg.payload_str());
    }
    manager.shutdown().await;
    Ok(())
}
