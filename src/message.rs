//! Messages: what a session receives ([`Message`]) and what it sends ([`Publish`]).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::delivery::AckGuard;

/// MQTT quality of service. Serialised as the number 0, 1 or 2.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub enum QoS {
    /// At most once (0): fire and forget.
    #[default]
    AtMostOnce = 0,
    /// At least once (1): acknowledged with PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// Exactly once (2): four-way handshake.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS as its wire number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A number that is not a QoS (0, 1 or 2): what [`QoS::try_from`] refuses. It converts
/// into [`Error::InvalidQos`](crate::Error::InvalidQos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid QoS {0}: must be 0, 1 or 2")]
pub struct InvalidQos(pub u8);

impl TryFrom<u8> for QoS {
    type Error = InvalidQos;
    fn try_from(v: u8) -> Result<Self, InvalidQos> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(InvalidQos(other)),
        }
    }
}

impl From<QoS> for u8 {
    fn from(q: QoS) -> u8 {
        q as u8
    }
}

impl std::fmt::Display for QoS {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

/// MQTT 5 subscription options (MQTT 5 section 3.8.3.1), set per route
/// ([`RouteBuilder::no_local`](crate::RouteBuilder::no_local) and friends).
///
/// Routes on the same filter of a session share one broker subscription. Its options are
/// the union of what the routes ask for, so that no route misses a message it asked
/// for: no local only when every route asks for it; retain as published when any route
/// asks for it; the retain handling that sends the most (send at subscribe, then send if
/// new, then never). A route asking for less than the union may therefore see a message
/// it would not have had alone (its own publish, or a retained message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Do not receive the messages this session publishes itself.
    pub no_local: bool,
    /// Keep the retain flag of forwarded messages as published (instead of clearing it
    /// for messages that are not sent because of the subscription).
    pub retain_as_published: bool,
    /// When the broker sends retained messages for this subscription.
    pub retain_handling: RetainHandling,
}

impl SubscribeOptions {
    /// The options one shared subscription needs to serve routes asking for `self` and
    /// `other` (see the type's docs).
    pub fn union(self, other: SubscribeOptions) -> SubscribeOptions {
        SubscribeOptions {
            no_local: self.no_local && other.no_local,
            retain_as_published: self.retain_as_published || other.retain_as_published,
            retain_handling: self.retain_handling.min(other.retain_handling),
        }
    }
}

/// When the broker sends retained messages for a subscription (MQTT 5).
/// Ordered from the one that sends the most.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RetainHandling {
    /// Send retained messages at every SUBSCRIBE (the default; what MQTT 3.1.1 does).
    #[default]
    SendAtSubscribe,
    /// Send them only when the subscription is new.
    SendIfNew,
    /// Never send retained messages.
    DontSend,
}

/// A message received by a session.
///
/// Cloning is cheap: the session name is shared and the payload is reference-counted
/// [`Bytes`], so delivering one message to many routes copies no payload.
///
/// # Acknowledgement
///
/// A QoS >= 1 message is acknowledged to its broker (PUBACK, or PUBREC for QoS 2) only
/// once **every clone of it has been dropped**: every route that got it has finished with
/// it. For a `handle` callback that is when the callback returns, for `handle_async` when
/// the future completes, for an actor route when the actor's handler is done with it, for
/// a `listen` receiver or [`SessionHandle::messages`](crate::SessionHandle::messages) when
/// the application drops the message it received. So a process that dies while a message
/// is queued or being handled has not acknowledged it, and the broker delivers it again
/// (to a persistent session). Acknowledgements go out in arrival order, so a message kept
/// alive holds back the acknowledgement of those after it, and the broker's in-flight
/// window then pauses the session's flow. To keep a message beyond its handling, keep a
/// [`detached`](Self::detached) copy. To give one up without acknowledging it, call
/// [`leave_unacknowledged`](Self::leave_unacknowledged) (it comes again at the next
/// connection, not while the session stays connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The session that received the message.
    pub session: Arc<str>,
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// The payload.
    pub payload: Bytes,
    /// The QoS at which this session received it (the lower of the publisher's QoS
    /// and the subscription's).
    pub qos: QoS,
    /// The retain flag: set when the broker delivered a retained message on subscribe.
    pub retain: bool,
    /// The DUP flag: the broker may have sent this message before.
    pub dup: bool,
    /// The packet identifier (0 for QoS 0).
    pub packet_id: u16,
    /// When the session received it.
    pub received_at: SystemTime,
    /// MQTT 5 properties, when the message carried any (always `None` on MQTT 3.1.1
    /// sessions). Boxed behind an `Arc` so that messages without properties stay small
    /// and fanning a message out to many routes copies no property.
    pub properties: Option<Arc<MessageProperties>>,
    /// When the broker may be acknowledged (QoS >= 1): once every clone is dropped.
    pub(crate) delivery: AckGuard,
}

/// Routes deliver messages to actix actors as this message type
/// ([`SessionManager::route_to`](crate::SessionManager::route_to)).
impl actix::Message for Message {
    type Result = ();
}

impl Message {
    /// A QoS 0 message as a session would hand it to its routes, received now: for
    /// testing handlers. Set the other public fields as needed.
    pub fn new(session: &str, topic: &str, payload: impl Into<Bytes>) -> Message {
        Message {
            session: Arc::from(session),
            topic: Arc::from(topic),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            dup: false,
            packet_id: 0,
            received_at: SystemTime::now(),
            properties: None,
            delivery: AckGuard::NONE,
        }
    }

    /// A copy that does not hold back the acknowledgement: keep it as long as you like.
    pub fn detached(&self) -> Message {
        Message {
            delivery: AckGuard::NONE,
            ..self.clone()
        }
    }

    /// True while the broker's acknowledgement of this message waits for it (and its
    /// clones) to be dropped: a QoS >= 1 message received live, not a detached copy.
    pub fn awaits_ack(&self) -> bool {
        self.delivery.is_pending()
    }

    /// Gives the message up without handling it: it is not acknowledged, whatever the other
    /// clones do, and the broker delivers it again (DUP 1, same packet id) at the next
    /// connection of a persistent session whose broker kept the session (a clean
    /// session's broker forgets it) — not before: MQTT lets a broker re-send only on a
    /// new connection, so while the session stays connected the message does not come
    /// back. Later messages are still acknowledged, but the message keeps one slot of the
    /// broker's in-flight window (mosquitto's `max_inflight_messages`, default 20; an MQTT
    /// 5 session's Receive Maximum) until then: once the window is full of messages left
    /// unacknowledged, the broker sends this session nothing more until it reconnects
    /// (`tests/unacknowledged.rs`). No effect on QoS 0 messages and detached copies.
    pub fn leave_unacknowledged(self) {
        self.delivery.abandon();
    }

    /// The payload as UTF-8 text, if it is valid UTF-8.
    pub fn payload_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.payload)
    }

    /// The payload decoded as JSON into `T`.
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The MQTT 5 response topic: where the sender of a request expects the answer.
    pub fn response_topic(&self) -> Option<&str> {
        self.properties.as_deref()?.response_topic.as_deref()
    }

    /// The MQTT 5 correlation data that ties a response to its request.
    pub fn correlation_data(&self) -> Option<&Bytes> {
        self.properties.as_deref()?.correlation_data.as_ref()
    }

    /// The MQTT 5 content type (a MIME type by convention).
    pub fn content_type(&self) -> Option<&str> {
        self.properties.as_deref()?.content_type.as_deref()
    }

    /// The values of the MQTT 5 user property `key`, in the order they were sent
    /// (a key may repeat).
    pub fn user_property(&self, key: &str) -> impl Iterator<Item = &str> + '_ {
        let key = key.to_string();
        self.properties
            .as_deref()
            .map(|p| p.user_properties.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// MQTT 5 properties of a PUBLISH, received ([`Message::properties`]) or sent
/// ([`Publish::properties`]).
///
/// On an MQTT 3.1.1 session, properties of an outgoing [`Publish`] are ignored (a debug
/// log line says so): 3.1.1 has no way to carry them, and refusing would make one
/// publish path behave differently per broker for data the receiver may not need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageProperties {
    /// User properties (key, value), in order; a key may repeat.
    pub user_properties: Vec<(String, String)>,
    /// Content type of the payload (a MIME type by convention).
    pub content_type: Option<String>,
    /// Payload format indicator: `Some(1)` means UTF-8 text, `Some(0)` bytes.
    pub payload_format_indicator: Option<u8>,
    /// Message expiry interval in seconds: the broker discards the message once it is
    /// older than this (received messages carry what is left of it).
    pub message_expiry_interval: Option<u32>,
    /// Where the receiver should send a response.
    pub response_topic: Option<String>,
    /// Ties a response to its request.
    pub correlation_data: Option<Bytes>,
    /// Identifiers of the subscriptions that matched (received messages only; this crate
    /// sets none on its subscriptions, other clients sharing a broker session might).
    pub subscription_identifiers: Vec<usize>,
}

impl MessageProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self == &MessageProperties::default()
    }

    /// Bytes the properties add to a PUBLISH packet (an upper bound: each property's
    /// identifier and lengths, plus the property length itself).
    pub(crate) fn wire_len(&self) -> usize {
        let mut len = 4;
        len += self
            .user_properties
            .iter()
            .map(|(k, v)| 5 + k.len() + v.len())
            .sum::<usize>();
        len += self.content_type.as_ref().map_or(0, |c| 3 + c.len());
        len += self.payload_format_indicator.map_or(0, |_| 2);
        len += self.message_expiry_interval.map_or(0, |_| 5);
        len += self.response_topic.as_ref().map_or(0, |t| 3 + t.len());
        len += self.correlation_data.as_ref().map_or(0, |c| 3 + c.len());
        len + self.subscription_identifiers.len() * 5
    }
}

/// An outgoing publish: topic, payload, QoS, retain flag and (MQTT 5) properties.
///
/// Built with [`Publish::new`] and the chained setters; sent with
/// [`SessionManager::publish`](crate::SessionManager::publish) or a session handle.
///
/// ```
/// use mqtt_sessions::{Publish, QoS};
/// let p = Publish::new("plant/1/cmd", r#"{"on":true}"#)
///     .qos(QoS::AtLeastOnce)
///     .content_type("application/json")
///     .user_property("origin", "gateway-7");
/// assert_eq!(p.properties.unwrap().user_properties.len(), 1);
/// ```
///
/// Properties are sent on MQTT 5 sessions only; an MQTT 3.1.1 session ignores them
/// (with a debug log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Quality of service.
    pub qos: QoS,
    /// Ask the broker to retain the message for future subscribers.
    pub retain: bool,
    /// MQTT 5 properties (boxed: most publishes have none). Not kept by the store's
    /// outbox: a publish replayed after a process restart goes out without them.
    pub properties: Option<Box<MessageProperties>>,
}

impl Publish {
    /// A QoS 0, non-retained publish.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        }
    }

    fn props(&mut self) -> &mut MessageProperties {
        self.properties.get_or_insert_with(Default::default)
    }

    /// Sets the QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Adds an MQTT 5 user property (keys may repeat).
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.props()
            .user_properties
            .push((key.into(), value.into()));
        self
    }

    /// Sets the MQTT 5 content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.props().content_type = Some(content_type.into());
        self
    }

    /// Sets the MQTT 5 payload format indicator: `true` for UTF-8 text.
    pub fn payload_is_utf8(mut self, utf8: bool) -> Self {
        self.props().payload_format_indicator = Some(u8::from(utf8));
        self
    }

    /// Sets the MQTT 5 response topic (see also
    /// [`SessionManager::request`](crate::SessionManager::request)).
    pub fn response_topic(mut self, topic: impl Into<String>) -> Self {
        self.props().response_topic = Some(topic.into());
        self
    }

    /// Sets the MQTT 5 correlation data.
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Self {
        self.props().correlation_data = Some(data.into());
        self
    }

    /// Sets the MQTT 5 message expiry interval (whole seconds, rounded up).
    pub fn message_expiry(mut self, expiry: std::time::Duration) -> Self {
        let secs = expiry.as_secs() + u64::from(expiry.subsec_nanos() > 0);
        self.props().message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        self
    }

    /// Sets every MQTT 5 property at once.
    pub fn properties(mut self, properties: MessageProperties) -> Self {
        self.properties = (!properties.is_empty()).then(|| Box::new(properties));
        self
    }

    /// Size of the PUBLISH packet this makes on an MQTT 5 connection (an upper bound
    /// used against the broker's Maximum Packet Size).
    pub(crate) fn packet_len(&self) -> usize {
        // fixed header (5) + topic length (2) + topic + packet id (2) + properties
        let props = self.properties.as_deref().map_or(1, |p| p.wire_len());
        5 + 2 + self.topic.len() + 2 + props + self.payload.len()
    }
}

#[cfg(test)]
mod subscribe_options_tests {
    use super::{RetainHandling as R, SubscribeOptions as O};

    #[test]
    fn the_union_serves_every_route() {
        let nl = O {
            no_local: true,
            ..O::default()
        };
        let rap_never = O {
            retain_as_published: true,
            retain_handling: R::DontSend,
            ..O::default()
        };
        assert!(nl.union(nl).no_local);
        assert!(!nl.union(O::default()).no_local);
        let u = rap_never.union(O {
            retain_handling: R::SendIfNew,
            ..O::default()
        });
        assert!(u.retain_as_published);
        assert_eq!(u.retain_handling, R::SendIfNew);
    }
}
