//! The embedded MQTT broker (rumqttd), for a daemon on a machine with nothing else
//! installed.
//!
//! rumqttd runs its router and listeners on threads of its own; [`start`] launches it on
//! a std thread and waits until its listener accepts connections. It has no shutdown API:
//! it lives as long as the process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::config::EmbeddedBrokerConfig;

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Its address is taken or cannot be bound.
    #[error("embedded broker: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Its thread could not be started.
    #[error("embedded broker: cannot start its thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// It did not accept connections in time.
    #[error("embedded broker: not accepting connections on {0} after {START_TIMEOUT:?}")]
    NotReady(SocketAddr),
}

/// Starts the broker and waits until it accepts connections on `config.listen`.
pub fn start(config: &EmbeddedBrokerConfig) -> Result<(), BrokerError> {
    let addr = *config.listen.get_ref();
    if addr.ip().to_canonical().is_loopback() {
        tracing::warn!(listen = %addr,
            "the embedded broker has no authentication and no TLS: any local process can connect, publish and subscribe");
    } else {
        tracing::warn!(listen = %addr,
            "the embedded broker has no authentication and no TLS, and listens beyond loopback (allow_remote = true): anyone who reaches this address can connect, publish and subscribe");
    }
    // rumqttd only logs a failed bind from its listener thread: find out first.
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| BrokerError::Bind { addr, source })?;
    let mut broker = rumqttd::Broker::new(rumqttd_config(config));
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Spawn)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            tracing::info!(listen = %addr, "embedded broker started");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotReady(addr))
}

fn rumqttd_config(c: &EmbeddedBrokerConfig) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: c.max_message_size.bytes(),
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "embedded-v4".into(),
        listen: *c.listen.get_ref(),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: c.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}
