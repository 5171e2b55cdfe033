//! The protocol seam: one neutral face over rumqttc's MQTT 3.1.1 and MQTT 5 clients.
//!
//! rumqttc has two separate clients (`rumqttc` and `rumqttc::v5`) with their own
//! options, packets, event loops and errors. Everything that differs lives here, so that
//! the session actor, its driver task, the outbox and the router exist once:
//! - [`Client`] is the request side the actor and the driver's `Acker` hold: publish (with
//!   properties on MQTT 5), subscribe (with subscribe options on MQTT 5), unsubscribe,
//!   acknowledge, disconnect — each non-blocking;
//! - [`Link`] is the event-loop side the driver owns: connect to broker *i* (its options
//!   built when the link switches to it: an idle session keeps one set, in rumqttc's event
//!   loop), poll into a protocol-neutral [`LinkEvent`], write acknowledgements, and the
//!   clean-up after a connection ends (empty rumqttc's retransmission state, count what it
//!   dropped).
//!
//! A `match` per call costs nothing next to a network packet. The link polls an
//! established connection itself over rumqttc's public protocol state (packet ids chosen
//! by the outbox, a PUBREL held until the session releases it): on MQTT 3.1.1 over
//! rumqttc's event loop once it connected (`internals`), on MQTT 5 over a connection it
//! opens itself (`mqtt5`). MQTT 5 over WebSocket keeps rumqttc's event loop, whose socket
//! is private.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use serde::Serialize;

use self::convert::qos_v4;
use self::convert::{ack_publish_v5, props_to_v5, qos5};
pub(crate) use self::options::packet_id_window;
use self::options::{options_v4, options_v5};
use super::failure::{classify_v4, classify_v5};

mod convert;
mod internals;
mod mqtt5;
mod options;
use self::internals::V4Loop;
use self::mqtt5::V5Loop;
use crate::credentials::{Credentials, CredentialsProvider};
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
pub(crate) struct IncomingPublish {
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
/// The broker's answer to one of our publishes or subscribes.
#[derive(Debug)]
pub(crate) enum BrokerAck {
    /// PUBACK for a QoS 1 publish, or a failed PUBREC (which ends a QoS 2 publish):
    /// `refused` holds the failure reason code (MQTT 5).
    Pub {
        /// Packet id.
        pkid: u16,
        /// The failure reason code, if the broker refused the publish.
        refused: Option<ReasonCode>,
    },
    /// PUBCOMP for a QoS 2 publish.
    Comp(u16),
    /// PUBREC for a QoS 2 publish whose PUBREL the link holds (MQTT 3.1.1, a persistent
    /// session with a store): [`Client::release`] sends it, once the publish's `released`
    /// flag is on disk.
    Rec(u16),
    /// SUBACK: one result per filter, in order.
    Sub {
        /// Packet id.
        pkid: u16,
        /// Granted QoS or the failure reason code, per filter.
        codes: Vec<Result<QoS, ReasonCode>>,
    },
}

/// A packet the connection wrote: rumqttc's `Outgoing`, the same for both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// A PUBLISH with this packet id (0: QoS 0).
    Publish(u16),
    /// A SUBSCRIBE.
    Subscribe(u16),
    /// An UNSUBSCRIBE.
    Unsubscribe(u16),
    /// A PUBACK for an incoming QoS 1 message.
    PubAck(u16),
    /// A PUBREC for an incoming QoS 2 message.
    PubRec(u16),
    /// A PUBREL for one of our QoS 2 publishes.
    PubRel(u16),
    /// A PUBCOMP, which ends an incoming QoS 2 message.
    PubComp(u16),
    /// A PINGREQ.
    PingReq,
    /// A PINGRESP.
    PingResp,
    /// A DISCONNECT.
    Disconnect,
    /// Nothing: a publish was held back because its packet id is still in flight.
    AwaitAck(u16),
}

impl From<rumqttc::Outgoing> for Written {
    fn from(o: rumqttc::Outgoing) -> Self {
        use rumqttc::Outgoing as O;
        match o {
            O::Publish(id) => Written::Publish(id),
            O::Subscribe(id) => Written::Subscribe(id),
            O::Unsubscribe(id) => Written::Unsubscribe(id),
            O::PubAck(id) => Written::PubAck(id),
            O::PubRec(id) => Written::PubRec(id),
            O::PubRel(id) => Written::PubRel(id),
            O::PubComp(id) => Written::PubComp(id),
            O::PingReq => Written::PingReq,
            O::PingResp => Written::PingResp,
            O::Disconnect => Written::Disconnect,
            O::AwaitAck(id) => Written::AwaitAck(id),
        }
    }
}

#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A PUBLISH from the broker.
    Publish(IncomingPublish),
    /// The broker acknowledged one of our requests (handed on to the actor as is).
    Ack(BrokerAck),
    /// The connection wrote one of our requests (or answered the broker).
    Written(Written),
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
    /// The credentials provider supplied no credentials (why, one line); nothing was sent.
    Credentials(String),
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
            LinkError::Credentials(why) => ConnectionFailure {
                kind: ErrorKind::Credentials,
                broker: broker.url.clone(),
                message: why.clone(),
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
pub(crate) struct OwedAck {
    /// QoS of the message (1 or 2).
    pub qos: QoS,
    /// Its packet id.
    pub pkid: u16,
}

/// The request side of a connection: a cheap clone of rumqttc's client (MQTT 5), or of
/// the sender of the link's own request channel (MQTT 3.1.1, see `internals`).
#[derive(Debug, Clone)]
pub(crate) enum Client {
    /// MQTT 3.1.1.
    V4(flume::Sender<rumqttc::Request>),
    /// MQTT 5 over TCP or TLS: the sender of the link's own request channel (`mqtt5.rs`).
    V5(flume::Sender<v5::Request>),
    /// MQTT 5 over WebSocket: rumqttc's client.
    V5Ws(v5::AsyncClient),
}

/// A request rumqttc's channel did not take (full or closed).
#[derive(Debug, thiserror::Error)]
#[error("the connection's request channel is full or closed")]
pub(crate) struct NotQueued;

impl Client {
    /// Whether the outbox chooses the packet ids of its publishes (MQTT 3.1.1, and
    /// MQTT 5 over TCP or TLS; over WebSocket rumqttc numbers them and reports the id
    /// once written).
    pub(crate) fn takes_packet_ids(&self) -> bool {
        matches!(self, Client::V4(_) | Client::V5(_))
    }

    /// Hands a publish to the connection without waiting; false when its channel is full.
    /// `pkid` is the packet id the outbox chose (QoS >= 1; ignored over WebSocket on
    /// MQTT 5, where rumqttc numbers publishes itself).
    pub(crate) fn publish_now(&self, p: &Publish, pkid: u16) -> bool {
        let sent = match self {
            Client::V4(tx) => {
                if p.properties.is_some() {
                    tracing::debug!(topic = %p.topic, "MQTT 5 properties ignored on an MQTT 3.1.1 session");
                }
                let out = convert::publish_v4(p, pkid);
                Some(tx.try_send(rumqttc::Request::Publish(out)).is_ok())
            }
            Client::V5(tx) => {
                let out = convert::publish_v5(p, pkid);
                Some(tx.try_send(v5::Request::Publish(out)).is_ok())
            }
            Client::V5Ws(c) => match &p.properties {
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
            Client::V4(tx) => tx
                .try_send(rumqttc::Request::Subscribe(rumqttc::Subscribe::new_many(
                    subs.iter()
                        .map(|(f, q, _)| rumqttc::SubscribeFilter::new(f.clone(), qos_v4(*q))),
                )))
                .map_err(|_| NotQueued),
            Client::V5(tx) => tx
                .try_send(v5::Request::Subscribe(p5::Subscribe::new_many(
                    subs.iter().map(|(f, q, o)| filter_v5(f, *q, *o)),
                    None,
                )))
                .map_err(|_| NotQueued),
            Client::V5Ws(c) => c
                .try_subscribe_many(subs.iter().map(|(f, q, o)| filter_v5(f, *q, *o)))
                .map_err(|_| NotQueued),
        }
    }

    /// Queues an UNSUBSCRIBE.
    pub(crate) fn unsubscribe_now(&self, filter: &str) -> Result<(), NotQueued> {
        match self {
            Client::V4(tx) => tx
                .try_send(rumqttc::Request::Unsubscribe(rumqttc::Unsubscribe::new(
                    filter,
                )))
                .map_err(|_| NotQueued),
            Client::V5(tx) => tx
                .try_send(v5::Request::Unsubscribe(p5::Unsubscribe::new(filter, None)))
                .map_err(|_| NotQueued),
            Client::V5Ws(c) => c.try_unsubscribe(filter).map_err(|_| NotQueued),
        }
    }

    /// Queues a DISCONNECT (normal disconnection: the broker drops the will message).
    pub(crate) fn disconnect_now(&self) -> Result<(), NotQueued> {
        match self {
            Client::V4(tx) => tx
                .try_send(rumqttc::Request::Disconnect(rumqttc::Disconnect))
                .map_err(|_| NotQueued),
            Client::V5(tx) => tx.try_send(v5::Request::Disconnect).map_err(|_| NotQueued),
            Client::V5Ws(c) => c.try_disconnect().map_err(|_| NotQueued),
        }
    }

    /// Queues the PUBACK / PUBREC of a received message without waiting.
    pub(crate) fn ack_now(&self, t: OwedAck) -> Result<(), NotQueued> {
        match self {
            Client::V4(tx) => tx
                .try_send(convert::ack_request_v4(t))
                .map_err(|_| NotQueued),
            Client::V5(tx) => tx
                .try_send(convert::ack_request_v5(t))
                .map_err(|_| NotQueued),
            Client::V5Ws(c) => c.try_ack(&ack_publish_v5(t)).map_err(|_| NotQueued),
        }
    }

    /// Queues the PUBACK / PUBREC of a received message, waiting for room.
    pub(crate) async fn ack(&self, t: OwedAck) -> Result<(), NotQueued> {
        match self {
            Client::V4(tx) => tx
                .send_async(convert::ack_request_v4(t))
                .await
                .map_err(|_| NotQueued),
            Client::V5(tx) => tx
                .send_async(convert::ack_request_v5(t))
                .await
                .map_err(|_| NotQueued),
            Client::V5Ws(c) => c.ack(&ack_publish_v5(t)).await.map_err(|_| NotQueued),
        }
    }
}

impl Client {
    /// Sends the PUBREL held for `pkid` (see [`BrokerAck::Rec`]); false when the channel is
    /// full (try again later). Nothing to do on MQTT 5 (rumqttc sent it).
    pub(crate) fn release(&self, pkid: u16) -> bool {
        match self {
            Client::V4(tx) => tx
                .try_send(rumqttc::Request::PubRel(rumqttc::PubRel::new(pkid)))
                .is_ok(),
            Client::V5(tx) => tx
                .try_send(v5::Request::PubRel(p5::PubRel::new(pkid, None)))
                .is_ok(),
            Client::V5Ws(_) => true,
        }
    }
}

/// One MQTT 5 subscription filter with its options.
fn filter_v5(filter: &str, qos: QoS, o: SubscribeOptions) -> p5::Filter {
    p5::Filter {
        path: filter.to_string(),
        qos: qos5(qos),
        nolocal: o.no_local,
        preserve_retain: o.retain_as_published,
        retain_forward_rule: match o.retain_handling {
            RetainHandling::SendAtSubscribe => p5::RetainForwardRule::OnEverySubscribe,
            RetainHandling::SendIfNew => p5::RetainForwardRule::OnNewSubscribe,
            RetainHandling::DontSend => p5::RetainForwardRule::Never,
        },
    }
}

/// The event-loop side of a connection, owned by the driver task. The event loops are
/// boxed (they differ in size by hundreds of bytes; one pointer per poll is nothing).
pub(crate) struct Link {
    el: EventLoop,
    /// MQTT 3.1.1: the session's own poll once connected (see `internals`).
    v4: Option<Box<V4Loop>>,
    /// What the options of any broker are built from.
    spec: LinkSpec,
    /// The broker the event loop's options are for.
    current: usize,
}

/// The event loop of either protocol.
enum EventLoop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5 over TCP or TLS: the session's own connection (`mqtt5.rs`).
    V5(Box<V5Loop>),
    /// MQTT 5 over WebSocket: rumqttc's event loop.
    V5Ws(Box<v5::EventLoop>),
}

/// What rumqttc's options for one broker are built from (shared with the session).
pub(crate) struct LinkSpec {
    /// The session's options.
    pub opts: Arc<SessionOptions>,
    /// The client id (the broker's assigned one, once it gave one).
    pub client_id: Arc<str>,
    /// The session's brokers.
    pub brokers: Arc<[BrokerUrl]>,
    /// The TLS configuration for TLS brokers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Hold each PUBREL until the session releases it (MQTT 3.1.1): a persistent session
    /// with a store, which puts the `released` flag on disk first.
    pub hold_pubrel: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.el {
            EventLoop::V4(_) => "Link::V4",
            EventLoop::V5(_) => "Link::V5",
            EventLoop::V5Ws(_) => "Link::V5Ws",
        })
    }
}

/// Asks `provider` for the credentials of one connection attempt, on a blocking thread,
/// waiting at most `timeout`; the error is the failure's one-line message.
async fn fetch_credentials(
    provider: &CredentialsProvider,
    timeout: Duration,
) -> Result<Credentials, String> {
    let provider = provider.clone();
    let call = tokio::task::spawn_blocking(move || provider.get());
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(Ok(credentials))) => Ok(credentials),
        Ok(Ok(Err(e))) => Err(format!("credentials provider failed: {e}")),
        Ok(Err(_)) => Err("credentials provider panicked".into()),
        Err(_) => Err(format!(
            "credentials provider gave no answer within {timeout:?} (the connect timeout)"
        )),
    }
}

/// Capacity of rumqttc's request channel for a session.
pub(super) fn request_capacity(opts: &SessionOptions) -> usize {
    usize::from(opts.performance.inflight) + 256
}

impl Link {
    /// A client and its event loop for the session's protocol, set up for the first broker.
    pub(crate) fn new(spec: LinkSpec) -> (Client, Link) {
        let cap = request_capacity(&spec.opts);
        let first = &spec.brokers[0];
        let (client, el, v4) = match spec.opts.protocol {
            Protocol::V311 => {
                let options = options_v4(&spec.opts, &spec.client_id, first, spec.tls.as_ref());
                // rumqttc's own request channel stays unused (see `internals`).
                let mut el = rumqttc::EventLoop::new(options, 1);
                let mut net = el.network_options();
                net.set_connection_timeout(spec.opts.connect.connect_timeout.as_secs().max(1));
                net.set_tcp_nodelay(true);
                el.set_network_options(net);
                let (tx, rx) = flume::bounded(cap);
                let lp = V4Loop::new(
                    rx,
                    packet_id_window(&spec.opts),
                    spec.hold_pubrel,
                    spec.opts.connect.keep_alive,
                );
                (
                    Client::V4(tx),
                    EventLoop::V4(Box::new(el)),
                    Some(Box::new(lp)),
                )
            }
            Protocol::V5 => {
                let options = options_v5(&spec.opts, &spec.client_id, first, spec.tls.as_ref());
                let websocket = spec
                    .brokers
                    .iter()
                    .any(|b| matches!(b.transport, Transport::Ws | Transport::Wss));
                if websocket {
                    let (client, el) = v5::AsyncClient::new(options, cap);
                    (Client::V5Ws(client), EventLoop::V5Ws(Box::new(el)), None)
                } else {
                    let (tx, rx) = flume::bounded(cap);
                    let lp =
                        V5Loop::new(options, rx, packet_id_window(&spec.opts), spec.hold_pubrel);
                    (Client::V5(tx), EventLoop::V5(Box::new(lp)), None)
                }
            }
        };
        (
            client,
            Link {
                el,
                v4,
                spec,
                current: 0,
            },
        )
    }

    /// Uses `id` from now on (the broker assigned it; MQTT 5).
    pub(crate) fn set_client_id(&mut self, id: &str) {
        self.spec.client_id = Arc::from(id);
        match &mut self.el {
            EventLoop::V5(lp) => {
                lp.options.set_client_id(id.to_string());
            }
            EventLoop::V5Ws(el) => {
                el.options.set_client_id(id.to_string());
            }
            EventLoop::V4(_) => {}
        }
    }

    /// Points the event loop at broker number `broker` (its options are built now).
    fn switch_to(&mut self, broker: usize) {
        if broker == self.current {
            return;
        }
        let s = &self.spec;
        let b = &s.brokers[broker];
        match &mut self.el {
            EventLoop::V4(el) => {
                el.mqtt_options = options_v4(&s.opts, &s.client_id, b, s.tls.as_ref());
            }
            EventLoop::V5(lp) => {
                lp.options = options_v5(&s.opts, &s.client_id, b, s.tls.as_ref());
            }
            EventLoop::V5Ws(el) => {
                el.options = options_v5(&s.opts, &s.client_id, b, s.tls.as_ref());
            }
        }
        self.current = broker;
    }
}
