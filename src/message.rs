//! Messages: what a session receives ([`Message`]) and what it sends ([`Publish`]).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Error;

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

impl TryFrom<u8> for QoS {
    type Error = Error;
    fn try_from(v: u8) -> Result<Self, Error> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(Error::InvalidQos(other)),
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

impl From<QoS> for rumqttc::QoS {
    fn from(q: QoS) -> Self {
        match q {
            QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        }
    }
}

impl From<rumqttc::QoS> for QoS {
    fn from(q: rumqttc::QoS) -> Self {
        match q {
            rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
            rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
            rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
}

/// A message received by a session.
///
/// Cloning is cheap: the session name is shared and the payload is reference-counted
/// [`Bytes`], so delivering one message to many routes copies no payload.
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
}

/// Routes deliver messages to actix actors as this message type
/// ([`SessionManager::route_to`](crate::SessionManager::route_to)).
impl actix::Message for Message {
    type Result = ();
}

impl Message {
    /// The payload as UTF-8 text, if it is valid UTF-8.
    pub fn payload_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.payload)
    }

    /// The payload decoded as JSON into `T`.
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// An outgoing publish: topic, payload, QoS and retain flag.
///
/// Built with [`Publish::new`] and the chained setters; sent with
/// [`SessionManager::publish`](crate::SessionManager::publish) or a session handle.
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
}

impl Publish {
    /// A QoS 0, non-retained publish.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
        }
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
}
