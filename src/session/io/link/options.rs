//! The rumqttc options of one broker, for MQTT 3.1.1 and MQTT 5: transport (TCP, TLS,
//! WebSocket), credentials, keep-alive, clean session, will, packet sizes.

use std::sync::Arc;

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;

use super::convert::{qos5, qos_v4};
use super::request_capacity;
use crate::options::{BrokerUrl, SessionOptions, Transport};

/// Room for the topic and header above `max_message_size`: oversized payloads are refused
/// by this crate with a typed error (outgoing) or dropped and counted (incoming), not by
/// a disconnect.
fn max_packet(opts: &SessionOptions) -> usize {
    opts.performance
        .max_message_size
        .saturating_add(65_536 + 16)
}

fn transport(broker: &BrokerUrl, tls: Option<&Arc<rustls::ClientConfig>>) -> rumqttc::Transport {
    let tls_config = || {
        let config = match tls {
            Some(c) => Arc::clone(c),
            None => {
                tracing::error!(broker = %broker.url, "no TLS configuration prepared for a TLS broker; no certificate will be trusted");
                crate::tls::trust_nothing_config()
            }
        };
        rumqttc::TlsConfiguration::Rustls(config)
    };
    match broker.transport {
        Transport::Tcp => rumqttc::Transport::Tcp,
        Transport::Ws => rumqttc::Transport::Ws,
        Transport::Tls => rumqttc::Transport::tls_with_config(tls_config()),
        Transport::Wss => rumqttc::Transport::wss_with_config(tls_config()),
    }
}

/// rumqttc's window of outgoing packet ids: one slot more than the outbox ever uses, so
/// rumqttc never stops reading requests (acknowledgements of incoming messages travel the
/// same channel). An id above it cannot be sent.
pub(crate) fn packet_id_window(opts: &SessionOptions) -> u16 {
    opts.performance.inflight.saturating_add(1)
}

fn host(broker: &BrokerUrl) -> String {
    match broker.transport {
        Transport::Ws | Transport::Wss => broker.url.clone(),
        Transport::Tcp | Transport::Tls => broker.host.clone(),
    }
}

/// rumqttc MQTT 3.1.1 options for one broker of the session; `tls` is the session's TLS
/// configuration (used for TLS brokers only).
pub(super) fn options_v4(
    opts: &SessionOptions,
    client_id: &str,
    broker: &BrokerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> rumqttc::MqttOptions {
    let mut mo = rumqttc::MqttOptions::new(client_id, host(broker), broker.port);
    mo.set_keep_alive(opts.connect.keep_alive);
    mo.set_clean_session(opts.connect.clean_session);
    mo.set_max_packet_size(max_packet(opts), max_packet(opts));
    mo.set_inflight(packet_id_window(opts));
    mo.set_manual_acks(true);
    mo.set_request_channel_capacity(request_capacity(opts));
    if let Some((user, pass)) = credentials(opts) {
        mo.set_credentials(user, pass);
    }
    if let Some(will) = &opts.connect.will {
        mo.set_last_will(rumqttc::LastWill::new(
            will.topic.clone(),
            will.payload.clone().into_bytes(),
            qos_v4(will.qos),
            will.retain,
        ));
    }
    if broker.transport != Transport::Tcp {
        mo.set_transport(transport(broker, tls));
    }
    mo
}

/// User name and password for CONNECT (the password may be empty).
fn credentials(opts: &SessionOptions) -> Option<(String, String)> {
    let user = opts.username.clone()?;
    let pass = opts
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    Some((user, pass))
}

/// rumqttc MQTT 5 options for one broker of the session.
pub(super) fn options_v5(
    opts: &SessionOptions,
    client_id: &str,
    broker: &BrokerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> v5::MqttOptions {
    let mut mo = v5::MqttOptions::new(client_id, host(broker), broker.port);
    // Validation guarantees >= 5 s (rumqttc's MQTT 5 client asserts it).
    mo.set_keep_alive(
        opts.connect
            .keep_alive
            .max(std::time::Duration::from_secs(5)),
    );
    mo.set_clean_start(opts.connect.clean_session);
    mo.set_connection_timeout(opts.connect.connect_timeout.as_secs().max(1));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(opts.connect.connect_timeout.as_secs().max(1));
    net.set_tcp_nodelay(true);
    mo.set_network_options(net);
    // Tells the broker too: it does not send us larger packets [MQTT-3.1.2-24].
    mo.set_max_packet_size(Some(u32::try_from(max_packet(opts)).unwrap_or(u32::MAX)));
    mo.set_outgoing_inflight_upper_limit(packet_id_window(opts));
    if let Some(n) = opts.performance.receive_maximum {
        mo.set_receive_maximum(Some(n));
    }
    mo.set_manual_acks(true);
    mo.set_request_channel_capacity(request_capacity(opts));
    if let Some(expiry) = opts.connect.session_expiry {
        mo.set_session_expiry_interval(Some(u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX)));
    }
    if let Some((user, pass)) = credentials(opts) {
        mo.set_credentials(user, pass);
    }
    if let Some(will) = &opts.connect.will {
        mo.set_last_will(p5::LastWill::new(
            will.topic.clone(),
            will.payload.clone().into_bytes(),
            qos5(will.qos),
            will.retain,
            None,
        ));
    }
    if broker.transport != Transport::Tcp {
        mo.set_transport(transport(broker, tls));
    }
    mo
}
