//! Errors: one enum per layer, gathered under the crate-wide [`Error`].
//!
//! Messages are lowercase, carry no trailing period and lead with their context
//! (`session "plant-1": ...`), so they read well when wrapped by an application.

use std::time::Duration;

use crate::options::OptionsError;
use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when using a [`SessionManager`](crate::SessionManager).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic name or topic filter broke an MQTT rule.
    #[error(transparent)]
    Topic(#[from] TopicError),

    /// Session options failed validation.
    #[error(transparent)]
    Options(#[from] OptionsError),

    /// No session of that name is registered.
    #[error("unknown session {0:?}")]
    UnknownSession(String),

    /// A session of that name is already registered.
    #[error("session {0:?} already exists")]
    DuplicateSession(String),

    /// Another session already uses this client id on one of the same brokers;
    /// two sessions with one client id would keep disconnecting each other.
    #[error("client id {client_id:?} of session {session:?} is already used by session {existing:?} on broker {broker}")]
    DuplicateClientId {
        /// The session being added.
        session: String,
        /// The session that already owns the client id.
        existing: String,
        /// The client id both would use.
        client_id: String,
        /// A broker both sessions connect to.
        broker: String,
    },

    /// A QoS 0 publish was attempted while the session is not connected
    /// (QoS 0 messages are never queued).
    #[error("session {session:?}: not connected, QoS 0 publish not sent")]
    NotConnected {
        /// The session.
        session: String,
    },

    /// The session's queue of QoS >= 1 publishes waiting for a connection is full.
    #[error("session {session:?}: publish queue full ({limit} messages pending)")]
    QueueFull {
        /// The session.
        session: String,
        /// The configured `max_pending_messages`.
        limit: usize,
    },

    /// A payload larger than the session's `max_message_size`.
    #[error(
        "session {session:?}: payload of {size} bytes exceeds max_message_size of {max} bytes"
    )]
    PayloadTooLarge {
        /// The session.
        session: String,
        /// The payload's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// A QoS value other than 0, 1 or 2.
    #[error("invalid QoS {0}: must be 0, 1 or 2")]
    InvalidQos(u8),

    /// The broker did not acknowledge a publish within the session's write timeout.
    #[error("session {session:?}: publish not acknowledged within {timeout:?}")]
    PublishTimeout {
        /// The session.
        session: String,
        /// The configured `write_timeout`.
        timeout: Duration,
    },

    /// The broker refused a subscription (SUBACK failure return code).
    #[error("session {session:?}: broker refused subscription to {filter:?}: {reason}")]
    SubscribeRefused {
        /// The session.
        session: String,
        /// The refused filter.
        filter: String,
        /// The SUBACK's reason code (MQTT 3.1.1 has one failure code, reported as
        /// `0x80`, unspecified error).
        reason: ReasonCode,
    },

    /// The broker refused a QoS >= 1 publish: its PUBACK or PUBREC carried a failure
    /// reason code (MQTT 5 only). The publish is not retried.
    #[error("session {session:?}: broker refused the publish to {topic:?}: {reason}")]
    PublishRefused {
        /// The session.
        session: String,
        /// The publish's topic.
        topic: String,
        /// The PUBACK's (or PUBREC's) reason code, 0x80 or above.
        reason: ReasonCode,
    },

    /// A packet larger than the broker's Maximum Packet Size (from its MQTT 5 CONNACK):
    /// the broker would close the connection, so the publish is refused instead.
    #[error("session {session:?}: publish of {size} bytes exceeds the broker's maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The session.
        session: String,
        /// The PUBLISH packet's size (an upper bound).
        size: usize,
        /// The broker's limit.
        max: u32,
    },

    /// The operation needs an MQTT 5 session (`protocol = "5"`).
    #[error("session {session:?}: {feature} needs MQTT 5 (protocol = \"5\")")]
    Mqtt5Required {
        /// The session.
        session: String,
        /// What was asked for.
        feature: &'static str,
    },

    /// No response arrived within the request's timeout.
    #[error("session {session:?}: no response to the request on {topic:?} within {timeout:?}")]
    RequestTimeout {
        /// The session that sent the request.
        session: String,
        /// The request's topic.
        topic: String,
        /// The timeout.
        timeout: Duration,
    },

    /// [`SessionManager::respond`](crate::SessionManager::respond) was given a message
    /// without a response topic: it is not a request.
    #[error("message on {topic:?} has no response topic: it is not a request")]
    NotARequest {
        /// The message's topic.
        topic: String,
    },

    /// Route options out of range.
    #[error("invalid route: {0}")]
    InvalidRoute(String),

    /// A route's handler thread could not be started.
    #[error("cannot start a route handler thread: {0}")]
    Spawn(#[source] std::io::Error),

    /// A route of that name is already registered.
    #[error("route {0:?} already exists")]
    DuplicateRoute(String),

    /// Waiting for sessions to become ready timed out.
    #[error("timed out after {timeout:?} waiting for sessions to become ready: {}", not_ready.join(", "))]
    WaitTimeout {
        /// How long was waited.
        timeout: Duration,
        /// The sessions that were not ready, by name.
        not_ready: Vec<String>,
    },

    /// The session was removed or closed while the operation was in progress.
    #[error("session {0:?} is closed")]
    SessionClosed(String),

    /// The session stopped trying for good (state `gave_up`): remove it, or add it again.
    #[error("session {session:?} gave up: {reason}")]
    SessionGaveUp {
        /// The session.
        session: String,
        /// Why.
        reason: crate::event::GiveUpReason,
    },

    /// The manager has been shut down.
    #[error("the session manager is shut down")]
    Shutdown,

    /// A publish submitted through a held [`PublishLane`](crate::PublishLane): an earlier
    /// publish of the lane was refused for a passing reason, and this one must not
    /// overtake it. Submit both again, in order, after
    /// [`PublishLane::reopen`](crate::PublishLane::reopen).
    #[error("session {0:?}: publish held behind an earlier refused publish of its lane")]
    LaneHeld(String),

    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),

    /// Writing accepted publishes to the store failed (they were not accepted).
    #[error("cannot write to the store: {0}")]
    StoreWrite(String),

    /// No actix system is running on this thread; the manager's actors need one
    /// (start it inside `#[actix::main]`, `actix_rt::System::new().block_on(..)` or an actix-web app).
    #[error("no actix system is running on this thread")]
    NoActixSystem,

    /// The manager's metrics could not be registered in the prometheus registry given to
    /// the builder (an invalid prefix, or one already registered there by another manager).
    #[error("cannot register metrics with prefix {prefix:?}: {source}")]
    MetricsRegistration {
        /// The metric name prefix.
        prefix: String,
        /// What the registry said.
        #[source]
        source: prometheus::Error,
    },
}

impl From<actix::MailboxError> for Error {
    fn from(_: actix::MailboxError) -> Self {
        Error::Shutdown
    }
}

impl Error {
    /// True for a refusal of a publish that no retry can change: a bad topic or QoS, a
    /// payload or packet too large, a QoS 0 publish while disconnected (never queued), a
    /// refusal by the broker. False for what may pass (a full queue, a closing or
    /// restarting session, a store error, a held [`PublishLane`](crate::PublishLane)).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::PayloadTooLarge { .. }
                | Error::PacketTooLarge { .. }
                | Error::PublishRefused { .. }
                | Error::Topic(_)
                | Error::InvalidQos(_)
                | Error::NotConnected { .. }
                | Error::Options(_)
        )
    }
}
impl From<crate::message::InvalidQos> for Error {
    fn from(e: crate::message::InvalidQos) -> Self {
        Error::InvalidQos(e.0)
    }
}
