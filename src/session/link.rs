//! The protocol seam: one neutral face over rumqttc's MQTT 3.1.1 and MQTT 5 clients.
//!
//! rumqttc has two separate clients (`rumqttc` and `rumqttc::v5`) with their own
//! options, packets, event loops and errors. Everything that differs lives here, so that
//! the session actor, its driver task, the outbox and the router exist once:
//! - [`Client`] is the request side the actor and the driver's `Acker` hold: publish (with
//!   properties on MQTT 5), subscribe (with subscribe options on MQTT 5), unsubscribe,
//!   acknowledge, disconnect — each non-blocking;
//! - [`Link`] is the event-loop side the driver owns: connect to broker *i* (options built
//!   once per broker), poll into a protocol-neutral [`LinkEvent`], and the clean-up after a
//!   connection ends (empty rumqttc's retransmission state, count what it dropped).
//!
//! A `match` per call costs nothing next to a network packet, and keeps the MQTT 3.1.1
//! path exactly what it was (same rumqttc calls, same options).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::Outgoing;
use serde::Serialize;

use super::failure::{classify_v4, classify_v5};
use crate::event::{ConnectionFailure, ErrorKind};
use crate::message::{MessageProperties, Publish, QoS};
use crate::message::{RetainHandling, SubscribeOptions};
use crate::options::{BrokerUrl, Protocol, SessionOptions, Transport};
use crate::reason::ReasonCode;

/// What the broker's CONNACK allows (MQTT 5; all `None` on MQTT 3.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BrokerLimits {
    /// Receive Maximum: QoS >= 1 publishes the broker accepts in flight at once. The
    /// session caps its own in-flight window below it.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size: larger publishes are refused with
    /// [`Error::PacketTooLarge`](crate::Error::PacketTooLarge).
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum. This crate sends no topic aliases, so it never exceeds it.
    pub topic_alias_maximum: Option<u16>,
    /// The session expiry interval in effect (the broker may override the requested one).
    pub session_expiry_interval: Option<u32>,
}

/// A successful CONNACK.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnAckInfo {
    /// The broker kept a session for this client id.
    pub session_present: bool,
    /// The client id the broker assigned (MQTT 5, when the client id was empty).
    pub assigned_client_id: Option<String>,
    /// The broker's limits.
    pub limits: BrokerLimits,
}

/// An incoming PUBLISH, protocol-neutral.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// MQTT 5 properties, if any.
    pub properties: Option<Arc<MessageProperties>>,
}

/// What one poll of the event loop yielded, protocol-neutral.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A PUBLISH from the broker.
    Publish(Inbound),
    /// PUBACK, or a failed PUBREC (which ends a QoS 2 publish): `refused` holds a failure
    /// reason code (MQTT 5).
    PubAck {
        /// Packet id.
        pkid: u16,
        /// The failure reason code, if the broker refused the publish.
        refused: Option<ReasonCode>,
    },
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK: one result per filter, in order.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// Granted QoS or the failure reason code, per filter.
        codes: Vec<Result<QoS, ReasonCode>>,
    },
    /// rumqttc processed one of our requests (the same type for both protocols).
    Outgoing(Outgoing),
    /// Anything else (PINGRESP, UNSUBACK, a successful PUBREC, ...).
    Other,
}

/// A connection attempt or an established connection failed.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// From the MQTT 3.1.1 client.
    V4(rumqttc::ConnectionError),
    /// From the MQTT 5 client.
    V5(v5::ConnectionError),
    /// The first packet after CONNECT was not a CONNACK.
    NotConnAck(String),
}

impl LinkError {
    /// The failure as reported in events and status.
    pub(crate) fn classify(&self, broker: &BrokerUrl) -> ConnectionFailure {
        match self {
            LinkError::V4(e) => classify_v4(e, broker),
            LinkError::V5(e) => classify_v5(e, broker),
            LinkError::NotConnAck(what) => ConnectionFailure {
                kind: ErrorKind::Protocol,
                broker: broker.url.clone(),
                message: format!("expected CONNACK, got {what}"),
                reason: None,
            },
        }
    }
}

/// What rumqttc dropped from its queues after a connection ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Drained {
    /// Our QoS >= 1 publish requests not yet processed.
    pub qos1: usize,
    /// Our QoS 0 publish requests not yet processed.
    pub qos0: usize,
    /// SUBSCRIBE requests not yet processed.
    pub subs: usize,
}

/// The QoS and packet id of a received message: all an acknowledgement needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckToken {
    /// QoS of the message (1 or 2).
    pub qos: QoS,
    /// Its packet id.
    pub pkid: u16,
}

/// The request side of a connection: a cheap clone of rumqttc's client.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// A request rumqttc's channel did not take (full or closed).
#[derive(Debug, thiserror::Error)]
#[error("the connection's request channel is full or closed")]
pub(crate) struct NotQueued;

impl Client {
    /// Hands a publish to rumqttc without waiting; false when its channel is full.
    pub(crate) fn publish_now(&self, p: &Publish) -> bool {
        let sent = match self {
            Client::V4(c) => {
                if p.properties.is_some() {
                    tracing::debug!(topic = %p.topic, "MQTT 5 properties ignored on an MQTT 3.1.1 session");
                }
                c.publish_bytes(p.topic.clone(), qos_v4(p.qos), p.retain, p.payload.clone())
                    .now_or_never()
                    .map(|r| r.is_ok())
            }
            Client::V5(c) => match &p.properties {
                Some(props) => c
                    .publish_bytes_with_properties(
                        p.topic.clone(),
                        qos5(p.qos),
                        p.retain,
                        p.payload.clone(),
                        props_to_v5(props),
                    )
                    .now_or_never()
                    .map(|r| r.is_ok()),
                None => c
                    .publish_bytes(p.topic.clone(), qos5(p.qos), p.retain, p.payload.clone())
                    .now_or_never()
                    .map(|r| r.is_ok()),
            },
        };
        sent == Some(true)
    }

    /// Queues one SUBSCRIBE for these filters (subscribe options apply to MQTT 5 only).
    pub(crate) fn subscribe_now(
        &self,
        subs: &[(String, QoS, SubscribeOptions)],
    ) -> Result<(), NotQueued> {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    subs.iter()
                        .map(|(f, q, _)| rumqttc::SubscribeFilter::new(f.clone(), qos_v4(*q))),
                )
                .map_err(|_| NotQueued),
            Client::V5(c) => c
                .try_subscribe_many(subs.iter().map(|(f, q, o)| p5::Filter {
                    path: f.clone(),
                    qos: qos5(*q),
                    nolocal: o.no_local,
                    preserve_retain: o.retain_as_published,
                    retain_forward_rule: match o.retain_handling {
                        RetainHandling::SendAtSubscribe => p5::RetainForwardRule::OnEverySubscribe,
                        RetainHandling::SendIfNew => p5::RetainForwardRule::OnNewSubscribe,
                        RetainHandling::DontSend => p5::RetainForwardRule::Never,
                    },
                }))
                .map_err(|_| NotQueued),
        }
    }

    /// Queues an UNSUBSCRIBE.
    pub(crate) fn unsubscribe_now(&self, filter: &str) -> Result<(), NotQueued> {
        match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(|_| NotQueued),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(|_| NotQueued),
        }
    }

    /// Queues a DISCONNECT (normal disconnection: the broker drops the will message).
    pub(crate) fn disconnect_now(&self) -> Result<(), NotQueued> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| NotQueued),
            Client::V5(c) => c.try_disconnect().map_err(|_| NotQueued),
        }
    }

    /// Queues the PUBACK / PUBREC of a received message without waiting.
    pub(crate) fn ack_now(&self, t: AckToken) -> Result<(), NotQueued> {
        match self {
            Client::V4(c) => c.try_ack(&ack_publish_v4(t)).map_err(|_| NotQueued),
            Client::V5(c) => c.try_ack(&ack_publish_v5(t)).map_err(|_| NotQueued),
        }
    }

    /// Queues the PUBACK / PUBREC of a received message, waiting for room.
    pub(crate) async fn ack(&self, t: AckToken) -> Result<(), NotQueued> {
        match self {
            Client::V4(c) => c.ack(&ack_publish_v4(t)).await.map_err(|_| NotQueued),
            Client::V5(c) => c.ack(&ack_publish_v5(t)).await.map_err(|_| NotQueued),
        }
    }
}

/// rumqttc builds an acknowledgement from a publish's QoS and packet id only.
fn ack_publish_v4(t: AckToken) -> rumqttc::Publish {
    let mut p = rumqttc::Publish::new(String::new(), qos_v4(t.qos), Vec::<u8>::new());
    p.pkid = t.pkid;
    p
}

fn ack_publish_v5(t: AckToken) -> p5::Publish {
    let mut p = p5::Publish::new(String::new(), qos5(t.qos), Bytes::new(), None);
    p.pkid = t.pkid;
    p
}

/// The event-loop side of a connection, owned by the driver task. The event loops are
/// boxed (they differ in size by hundreds of bytes; one pointer per poll is nothing).
pub(crate) enum Link {
    /// MQTT 3.1.1: rumqttc's event loop and one options value per broker.
    V4 {
        /// The event loop.
        el: Box<rumqttc::EventLoop>,
        /// Options per broker, in the session's broker order.
        options: Vec<rumqttc::MqttOptions>,
    },
    /// MQTT 5.
    V5 {
        /// The event loop.
        el: Box<v5::EventLoop>,
        /// Options per broker.
        options: Vec<v5::MqttOptions>,
    },
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::V4 { .. } => "Link::V4",
            Link::V5 { .. } => "Link::V5",
        })
    }
}

/// Capacity of rumqttc's request channel for a session.
pub(super) fn request_capacity(opts: &SessionOptions) -> usize {
    usize::from(opts.performance.inflight) + 256
}

impl Link {
    /// A client and its event loop for the session's protocol; the options of every
    /// broker are built once here.
    pub(crate) fn new(
        opts: &SessionOptions,
        client_id: &str,
        brokers: &[BrokerUrl],
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> (Client, Link) {
        let cap = request_capacity(opts);
        match opts.protocol {
            Protocol::V311 => {
                let options: Vec<_> = brokers
                    .iter()
                    .map(|b| options_v4(opts, client_id, b, tls))
                    .collect();
                let (client, mut el) = rumqttc::AsyncClient::new(options[0].clone(), cap);
                let mut net = el.network_options();
                net.set_connection_timeout(opts.connect.connect_timeout.as_secs().max(1));
                net.set_tcp_nodelay(true);
                el.set_network_options(net);
                (
                    Client::V4(client),
                    Link::V4 {
                        el: Box::new(el),
                        options,
                    },
                )
            }
            Protocol::V5 => {
                let options: Vec<_> = brokers
                    .iter()
                    .map(|b| options_v5(opts, client_id, b, tls))
                    .collect();
                let (client, el) = v5::AsyncClient::new(options[0].clone(), cap);
                (
                    Client::V5(client),
                    Link::V5 {
                        el: Box::new(el),
                        options,
                    },
                )
            }
        }
    }

    /// Uses `id` from now on (the broker assigned it; MQTT 5).
    pub(crate) fn set_client_id(&mut self, id: &str) {
        if let Link::V5 { options, .. } = self {
            for o in options {
                o.set_client_id(id.to_string());
            }
        }
    }

    /// Connects to broker number `broker`: returns at CONNACK.
    pub(crate) async fn connect(&mut self, broker: usize) -> Result<ConnAckInfo, LinkError> {
        match self {
            Link::V4 { el, options } => {
                el.mqtt_options = options[broker].clone();
                el.network = None;
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        Ok(ConnAckInfo {
                            session_present: ack.session_present,
                            ..ConnAckInfo::default()
                        })
                    }
                    Ok(other) => Err(LinkError::NotConnAck(format!("{other:?}"))),
                    Err(e) => Err(LinkError::V4(e)),
                }
            }
            Link::V5 { el, options } => {
                // The network is always gone here: a failed poll cleans it up, and so does
                // `abandon`.
                el.options = options[broker].clone();
                match el.poll().await {
                    Ok(v5::Event::Incoming(p5::Packet::ConnAck(ack))) => {
                        let props = ack.properties.unwrap_or_else(|| p5::ConnAckProperties {
                            session_expiry_interval: None,
                            receive_max: None,
                            max_qos: None,
                            retain_available: None,
                            max_packet_size: None,
                            assigned_client_identifier: None,
                            topic_alias_max: None,
                            reason_string: None,
                            user_properties: Vec::new(),
                            wildcard_subscription_available: None,
                            subscription_identifiers_available: None,
                            shared_subscription_available: None,
                            server_keep_alive: None,
                            response_information: None,
                            server_reference: None,
                            authentication_method: None,
                            authentication_data: None,
                        });
                        Ok(ConnAckInfo {
                            session_present: ack.session_present,
                            assigned_client_id: props.assigned_client_identifier,
                            limits: BrokerLimits {
                                receive_maximum: props.receive_max,
                                maximum_packet_size: props.max_packet_size,
                                topic_alias_maximum: props.topic_alias_max,
                                session_expiry_interval: props
                                    .session_expiry_interval
                                    .or_else(|| el.options.session_expiry_interval()),
                            },
                        })
                    }
                    Ok(other) => Err(LinkError::NotConnAck(format!("{other:?}"))),
                    Err(e) => Err(LinkError::V5(e)),
                }
            }
        }
    }

    /// Polls an established connection once.
    pub(crate) async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Link::V4 { el, .. } => el.poll().await.map(from_v4).map_err(LinkError::V4),
            Link::V5 { el, .. } => el.poll().await.map(from_v5).map_err(LinkError::V5),
        }
    }

    /// The connection is declared dead while a poll was in progress (read timeout).
    pub(crate) fn abandon(&mut self) {
        match self {
            Link::V4 { el, .. } => el.clean(),
            Link::V5 { el, .. } => el.clean(),
        }
    }

    /// The next event rumqttc had already buffered, after a failure.
    pub(crate) fn buffered(&mut self) -> Option<LinkEvent> {
        match self {
            Link::V4 { el, .. } => el.state.events.pop_front().map(from_v4),
            Link::V5 { el, .. } => el.state.events.pop_front().map(from_v5),
        }
    }

    /// Empties rumqttc's queued requests and retransmission state after a connection
    /// ended (the outbox re-sends what matters); returns what was dropped.
    pub(crate) fn reset(&mut self, inflight: u16) -> Drained {
        let mut d = Drained::default();
        match self {
            Link::V4 { el, .. } => {
                for req in el.pending.drain(..) {
                    match req {
                        rumqttc::Request::Publish(p) => match (p.pkid, p.qos) {
                            (0, rumqttc::QoS::AtMostOnce) => d.qos0 += 1,
                            (0, _) => d.qos1 += 1,
                            _ => {}
                        },
                        rumqttc::Request::Subscribe(_) => d.subs += 1,
                        _ => {}
                    }
                }
                el.state = rumqttc::MqttState::new(inflight.saturating_add(1), true);
                el.network = None;
            }
            Link::V5 { el, .. } => {
                for req in el.pending.drain(..) {
                    match req {
                        v5::Request::Publish(p) => match (p.pkid, p.qos) {
                            (0, v5::mqttbytes::QoS::AtMostOnce) => d.qos0 += 1,
                            (0, _) => d.qos1 += 1,
                            _ => {}
                        },
                        v5::Request::Subscribe(_) => d.subs += 1,
                        _ => {}
                    }
                }
                el.state = v5::MqttState::new(inflight.saturating_add(1), true);
            }
        }
        d
    }
}

fn from_v4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Packet};
    match ev {
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish(Inbound {
            topic: Arc::from(p.topic.as_str()),
            payload: p.payload,
            qos: qos_from_v4(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: None,
        }),
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Incoming(Packet::PubComp(c)) => LinkEvent::PubComp(c.pkid),
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            pkid: s.pkid,
            codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(q) => Ok(qos_from_v4(*q)),
                    rumqttc::SubscribeReasonCode::Failure => Err(ReasonCode::UNSPECIFIED_ERROR),
                })
                .collect(),
        },
        Event::Outgoing(o) => LinkEvent::Outgoing(o),
        Event::Incoming(_) => LinkEvent::Other,
    }
}

fn from_v5(ev: v5::Event) -> LinkEvent {
    use p5::Packet;
    match ev {
        v5::Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish(Inbound {
            topic: match std::str::from_utf8(&p.topic) {
                Ok(t) => Arc::from(t),
                Err(_) => Arc::from(String::from_utf8_lossy(&p.topic).as_ref()),
            },
            payload: p.payload,
            qos: qos_from5(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: p.properties.map(props_from_v5).map(Arc::new),
        }),
        v5::Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: Some(puback_code(&a.reason)).filter(|c| c.is_failure()),
        },
        v5::Event::Incoming(Packet::PubRec(r)) => {
            let code = pubrec_code(&r.reason);
            if code.is_failure() {
                LinkEvent::PubAck {
                    pkid: r.pkid,
                    refused: Some(code),
                }
            } else {
                LinkEvent::Other
            }
        }
        v5::Event::Incoming(Packet::PubComp(c)) => LinkEvent::PubComp(c.pkid),
        v5::Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            pkid: s.pkid,
            codes: s.return_codes.iter().map(suback_code).collect(),
        },
        v5::Event::Outgoing(o) => LinkEvent::Outgoing(o),
        v5::Event::Incoming(_) => LinkEvent::Other,
    }
}

fn qos5(q: QoS) -> v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_from5(q: v5::mqttbytes::QoS) -> QoS {
    match q {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn props_to_v5(p: &MessageProperties) -> p5::PublishProperties {
    p5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        // Never: this crate sends no topic aliases, so the broker's Topic Alias Maximum
        // is always respected.
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        // Only a server sets subscription identifiers [MQTT-3.3.4-6].
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    }
}

fn props_from_v5(p: p5::PublishProperties) -> MessageProperties {
    MessageProperties {
        user_properties: p.user_properties,
        content_type: p.content_type,
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        subscription_identifiers: p.subscription_identifiers,
    }
}

/// The MQTT 5 reason code of a v5 CONNACK refusal.
pub(super) fn connack_code_v5(c: &p5::ConnectReturnCode) -> ReasonCode {
    use p5::ConnectReturnCode as C;
    ReasonCode(match c {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => 0x84,
        C::BadClientId | C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServiceUnavailable | C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    })
}

/// The MQTT 5 counterpart of an MQTT 3.1.1 CONNACK refusal.
pub(super) fn connack_code_v4(c: &rumqttc::ConnectReturnCode) -> ReasonCode {
    use rumqttc::ConnectReturnCode as C;
    ReasonCode(match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
    })
}

fn puback_code(r: &p5::PubAckReason) -> ReasonCode {
    use p5::PubAckReason as R;
    ReasonCode(match r {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    })
}

fn pubrec_code(r: &p5::PubRecReason) -> ReasonCode {
    use p5::PubRecReason as R;
    ReasonCode(match r {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    })
}

fn suback_code(c: &p5::SubscribeReasonCode) -> Result<QoS, ReasonCode> {
    use p5::SubscribeReasonCode as S;
    Err(ReasonCode(match c {
        S::Success(q) => return Ok(qos_from5(*q)),
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }))
}

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
    // One slot more than the outbox ever uses, so rumqttc never stops reading requests
    // (acknowledgements of incoming messages travel the same channel).
    mo.set_inflight(opts.performance.inflight.saturating_add(1));
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
    mo.set_outgoing_inflight_upper_limit(opts.performance.inflight.saturating_add(1));
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

/// Our QoS as rumqttc's (MQTT 3.1.1 client); a function, not a `From` impl, so that no
/// rumqttc type appears in the crate's public API.
pub(crate) fn qos_v4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// rumqttc's QoS (MQTT 3.1.1 client) as ours.
pub(crate) fn qos_from_v4(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}
