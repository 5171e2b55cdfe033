//! Session options: what a session connects to and how it behaves.
//!
//! [`SessionOptions`] and its parts deserialise with serde (the daemon's TOML config uses
//! these same types), carry the Go original's defaults, and are checked by
//! [`SessionOptions::validate`], which returns a typed [`OptionsError`] naming the session,
//! the field and the reason. Durations are written like `"30s"` or `"1m 30s"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credentials::{Credentials, CredentialsError, CredentialsProvider, Secret};
use crate::message::QoS;
use crate::session::backoff::Backoff;
use crate::tls::TlsError;
pub use crate::tls::TlsOptions;
use crate::topic::{validate_topic_name, TopicError};

/// Why a set of session options was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The session name is empty, longer than 128 characters or has a control character.
    #[error("invalid session name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The broker list is empty.
    #[error("session {session:?}: no broker URL given")]
    NoBrokers {
        /// The session.
        session: String,
    },
    /// A broker URL could not be used.
    #[error("session {session:?}: invalid broker URL {url:?}: {reason}")]
    InvalidBrokerUrl {
        /// The session.
        session: String,
        /// The refused URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The client id breaks an MQTT rule.
    #[error("session {session:?}: invalid client id: {reason}")]
    InvalidClientId {
        /// The session.
        session: String,
        /// Why.
        reason: String,
    },
    /// The will message's topic is not a valid topic name.
    #[error("session {session:?}: invalid will topic: {source}")]
    InvalidWillTopic {
        /// The session.
        session: String,
        /// The topic rule that was broken.
        source: TopicError,
    },
    /// A numeric, size or duration option is out of range.
    #[error("session {session:?}: invalid {field}: {reason}")]
    InvalidValue {
        /// The session.
        session: String,
        /// The option, as written in a config file (`reconnect.factor`).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The TLS options cannot be used (a file is missing, a key does not match, ...).
    #[error("session {session:?}: {source}")]
    Tls {
        /// The session.
        session: String,
        /// What is wrong.
        source: TlsError,
    },
    /// The option asks for something this version does not do yet.
    #[error("session {session:?}: {feature} is not supported by this version")]
    Unsupported {
        /// The session.
        session: String,
        /// What was asked for.
        feature: &'static str,
    },
}

/// Everything one session needs: where to connect, as whom, and how to behave.
///
/// ```
/// use mqtt_sessions::SessionOptions;
/// let opts = SessionOptions::new("plant-1", "mqtt://127.0.0.1:1883");
/// assert_eq!(opts.connect.keep_alive.as_secs(), 60);
/// opts.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Unique session name: 1 to 128 characters of any text (`"生产设备"`) without control
    /// characters (it is a store key, a metric label value and a log field).
    pub name: String,
    /// Broker URLs, tried in order on every connection attempt
    /// (`mqtt://host:1883`, `tcp://host`, `mqtts://host:8883`, `ws://host:8080/mqtt`, ...).
    pub brokers: Vec<String>,
    /// MQTT client id. On an MQTT 5 session an empty client id asks the broker to assign
    /// one (the CONNACK's assigned client identifier, then used for every reconnect and
    /// shown in [`SessionStatus`](crate::SessionStatus)).
    /// When absent one is generated: `mqtt-sessions-{name}` for persistent
    /// sessions (so the broker finds the session again), with a random suffix otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name sent in CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password sent in CONNECT; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Connection behaviour.
    #[serde(default)]
    pub connect: ConnectOptions,
    /// Reconnect backoff.
    #[serde(default)]
    pub reconnect: ReconnectOptions,
    /// TLS settings for `mqtts://`, `ssl://`, `tls://` and `wss://` brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Queue sizes, limits and timeouts.
    #[serde(default)]
    pub performance: PerformanceOptions,
    /// MQTT protocol version.
    #[serde(default)]
    pub protocol: Protocol,
    /// Called before every connection attempt for the user name and password of that
    /// CONNECT, replacing `username` and `password` (short-lived tokens, rotated
    /// passwords); see [`credentials`](crate::credentials). Not serialised.
    #[serde(skip)]
    pub credentials_provider: Option<CredentialsProvider>,
}

/// Connection behaviour of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Keep-alive interval: zero (off) or 1 s to 65535 s in whole seconds. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Ask the broker for a clean session on every connect. Default true.
    pub clean_session: bool,
    /// Give up on one broker after this long without a CONNACK. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect after the connection drops. Default true.
    pub auto_reconnect: bool,
    /// Keep the session's subscriptions in the manager's store across restarts. Default false.
    pub persistent: bool,
    /// Re-send the session's subscriptions after a reconnect where the broker kept no
    /// session. Default true.
    pub resume_subscriptions: bool,
    /// Will message the broker publishes if the session ends without a DISCONNECT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub will: Option<WillOptions>,
    /// MQTT 5 session expiry interval (whole seconds): how long the broker keeps the
    /// session (subscriptions, queued QoS >= 1 messages) after the connection ends.
    /// Absent: 0, the session ends with the connection. MQTT 5 only (with MQTT 3.1.1,
    /// `clean_session = false` keeps the session); pair it with `clean_session = false`
    /// (clean start off) to resume the session on reconnect.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_expiry: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            connect_timeout: Duration::from_secs(30),
            auto_reconnect: true,
            persistent: false,
            resume_subscriptions: true,
            will: None,
            session_expiry: None,
        }
    }
}

/// A will (last testament) message.
///
/// Made with [`WillOptions::new`] (`#[non_exhaustive]`: a field added later breaks no
/// caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WillOptions {
    /// Topic name.
    pub topic: String,
    /// Payload as text.
    #[serde(default)]
    pub payload: String,
    /// QoS (0, 1 or 2). Default 0.
    #[serde(default)]
    pub qos: QoS,
    /// Retain flag. Default false.
    #[serde(default)]
    pub retain: bool,
}

impl WillOptions {
    /// A will on `topic` with `payload`, QoS 0, not retained.
    pub fn new(topic: impl Into<String>, payload: impl Into<String>) -> Self {
        WillOptions {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
        }
    }

    /// Its QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Its retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// Exponential backoff between connection attempts.
///
/// Attempt `n` (from 1) waits `min(initial_delay * factor^(n-1), max_delay)`, then a
/// random `±jitter` fraction of that is added. Every attempt walks the broker list once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ReconnectOptions {
    /// Delay before the second attempt. Must be above zero. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Upper bound of the delay. Default 120 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth factor, at least 1.0. Default 2.0.
    pub factor: f64,
    /// Random spread as a fraction of the delay, 0.0 to 1.0. Default 0.2.
    pub jitter: f64,
    /// Give up after this many attempts in a row (the session then stays
    /// `Disconnected`); absent means never give up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl ReconnectOptions {
    /// The range the delay after failed attempt number `attempt` (from 1) falls in: the
    /// base delay `min(initial_delay * factor^(attempt-1), max_delay)` less and plus its
    /// `jitter` fraction, never below 1 ms. The
    /// [`SessionReconnecting`](crate::EventData::SessionReconnecting) event of attempt `n`
    /// announces a delay within `delay_bounds(n - 1)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mqtt_sessions::ReconnectOptions;
    ///
    /// let mut r = ReconnectOptions::default(); // 1 s, doubling, up to 120 s, ±20 %
    /// r.jitter = 0.0;
    /// assert_eq!(r.delay_bounds(3), (Duration::from_secs(4), Duration::from_secs(4)));
    /// assert_eq!(r.delay_bounds(30).1, Duration::from_secs(120));
    /// ```
    pub fn delay_bounds(&self, attempt: u32) -> (Duration, Duration) {
        self.backoff().bounds(attempt)
    }

    /// The delay curve these options describe.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::curve(self.initial_delay, self.max_delay, self.factor, self.jitter)
    }
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
            factor: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

/// Queue sizes, limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PerformanceOptions {
    /// Capacity of each message channel handed out by the session. Default 100.
    pub message_channel_size: usize,
    /// Largest payload sent or accepted, in bytes. Larger incoming messages are
    /// dropped and counted. Default 32 KiB.
    pub max_message_size: usize,
    /// QoS >= 1 publishes that may wait for a connection or an acknowledgement;
    /// past it `publish` returns `QueueFull`. Default 1000.
    pub max_pending_messages: usize,
    /// QoS >= 1 publishes in flight (sent, not yet acknowledged). Default 100.
    pub inflight: u16,
    /// How long a QoS >= 1 publish may wait for its acknowledgement once sent. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A connection that receives nothing (not even a PINGRESP) for this long is
    /// considered dead and replaced. Absent: 1.5 x keep-alive.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Duration>,
    /// How long a received QoS >= 1 message that matches no route (and no
    /// [`messages`](crate::SessionHandle::messages) receiver) waits, unacknowledged, for a
    /// route to be registered — say, a persistent session's queued messages arriving
    /// between `add_session` and the registration of its routes. Past it, or past
    /// 1,000 such messages at once, the
    /// message is dropped, counted (`dropped_messages_total{reason="unrouted"}`) and
    /// acknowledged. While one waits, the acknowledgements of later messages wait too
    /// (they go out in order). Zero drops such messages at once. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub unrouted_hold: Duration,
    /// How long the session may stop reading from its connection while a
    /// [`Backpressure`](crate::Overflow::Backpressure) route's queue is full (the broker
    /// holds the messages meanwhile). Absent: half the keep-alive, so the keep-alive never
    /// lapses; must be below the keep-alive.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_stall: Option<Duration>,
    /// Run the session on this worker of the manager (the index modulo the number of
    /// workers, see [`SessionManagerBuilder::workers`](crate::SessionManagerBuilder::workers))
    /// instead of the least loaded one. Sessions that pass messages to each other (a
    /// route on one publishing through the other) share a worker this way, so that a
    /// message between them never crosses threads. Absent: the worker running the fewest
    /// sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// MQTT 5: the most QoS >= 1 messages the broker may have in flight to this session
    /// at once (Receive Maximum in CONNECT); the broker keeps the rest in its own queue
    /// for the session until acknowledgements free room. A session whose consumers hold
    /// messages unacknowledged for a while (a route with a deep queue, a forwarding
    /// rule) sets it to what they can hold, so that the broker neither floods it nor
    /// counts those messages against its queue limit (mosquitto drops a client's QoS >= 1
    /// messages past `max_queued_messages` plus this window). Absent: none is sent and
    /// the broker chooses (mosquitto: `max_inflight_messages`, 20). Not used on MQTT
    /// 3.1.1, which has no such field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<u16>,
}

impl Default for PerformanceOptions {
    fn default() -> Self {
        PerformanceOptions {
            message_channel_size: 100,
            max_message_size: 32 * 1024,
            max_pending_messages: 1000,
            inflight: 100,
            write_timeout: Duration::from_secs(30),
            read_timeout: None,
            unrouted_hold: Duration::from_secs(5),
            max_stall: None,
            worker: None,
            receive_maximum: None,
        }
    }
}

/// MQTT protocol version (`"3.1.1"` or `"5"` in a config file).
///
/// Both run through the same session actor, router and driver; MQTT 5 adds message
/// properties ([`MessageProperties`](crate::MessageProperties)), subscribe options
/// ([`SubscribeOptions`](crate::SubscribeOptions)), reason codes in errors, the session
/// expiry interval, server-assigned client ids, the broker's CONNACK limits and
/// request/response ([`SessionManager::request`](crate::SessionManager::request)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Protocol {
    /// MQTT 3.1.1 (the default).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// How a broker is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP (`mqtt://`, `tcp://`).
    Tcp,
    /// TLS over TCP (`mqtts://`, `ssl://`, `tls://`).
    Tls,
    /// WebSocket (`ws://`).
    Ws,
    /// WebSocket over TLS (`wss://`).
    Wss,
}

impl Transport {
    /// Whether the transport runs over TLS (`mqtts://`, `ssl://`, `tls://`, `wss://`).
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
}

/// A parsed, validated broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The URL as given.
    pub url: String,
    /// Transport.
    pub transport: Transport,
    /// Host name or address.
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a broker URL; `session` names the session in the error.
    pub fn parse(session: &str, raw: &str) -> Result<Self, OptionsError> {
        let bad = |reason: String| OptionsError::InvalidBrokerUrl {
            session: session.to_string(),
            url: raw.to_string(),
            reason,
        };
        let url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        let (transport, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (Transport::Tcp, 1883),
            "mqtts" | "ssl" | "tls" => (Transport::Tls, 8883),
            "ws" => (Transport::Ws, 80),
            "wss" => (Transport::Wss, 443),
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?} (use mqtt, tcp, mqtts, ssl, tls, ws or wss)"
                )))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host".to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(default_port);
        if port == 0 {
            return Err(bad("port 0".to_string()));
        }
        if matches!(transport, Transport::Tcp | Transport::Tls)
            && !(url.path().is_empty() || url.path() == "/")
        {
            return Err(bad("a TCP broker URL takes no path".to_string()));
        }
        Ok(BrokerUrl {
            url: raw.to_string(),
            transport,
            host,
            port,
        })
    }

    /// `host:port`, the broker's identity for duplicate client id checks.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// What a successful [`SessionOptions::check`] yields.
pub(crate) struct Validated {
    /// The parsed broker URLs, in order.
    pub(crate) brokers: Vec<BrokerUrl>,
    /// The TLS configuration, built once, when any broker uses TLS.
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Largest MQTT packet payload (the 4-byte remaining-length limit).
const MQTT_MAX_PAYLOAD: usize = 268_435_455;

impl SessionOptions {
    /// Options with defaults for a session named `name` on one broker.
    pub fn new(name: impl Into<String>, broker: impl Into<String>) -> Self {
        SessionOptions {
            name: name.into(),
            brokers: vec![broker.into()],
            client_id: None,
            username: None,
            password: None,
            connect: ConnectOptions::default(),
            reconnect: ReconnectOptions::default(),
            tls: None,
            performance: PerformanceOptions::default(),
            protocol: Protocol::default(),
            credentials_provider: None,
        }
    }

    /// Sets the client id.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Adds a fallback broker, tried after the ones already listed.
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.brokers.push(url.into());
        self
    }

    /// Sets user name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(Secret::new(password));
        self
    }

    /// Asks `provider` for the user name and password of every connection attempt (they
    /// replace [`credentials`](Self::credentials)); see [`crate::credentials`].
    pub fn credentials_provider(
        mut self,
        provider: impl Fn() -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> Self {
        self.credentials_provider = Some(CredentialsProvider::new(provider));
        self
    }

    /// Checks every option; returns the parsed broker URLs.
    ///
    /// When a broker uses TLS this also reads the TLS files (CA, client certificate and
    /// key) and builds the TLS configuration, so that a missing file or a mismatched key is
    /// reported here rather than at the first connect.
    pub fn validate(&self) -> Result<Vec<BrokerUrl>, OptionsError> {
        self.check().map(|v| v.brokers)
    }

    /// [`validate`](Self::validate), keeping the TLS configuration it built.
    pub(crate) fn check(&self) -> Result<Validated, OptionsError> {
        let brokers = self.check_without_files()?;
        let tls = self.tls_config(&brokers)?;
        Ok(Validated { brokers, tls })
    }

    /// Every check that reads no file; returns the parsed broker URLs. What remains is
    /// [`tls_config`](Self::tls_config).
    pub(crate) fn check_without_files(&self) -> Result<Vec<BrokerUrl>, OptionsError> {
        validate_name(&self.name)?;
        let session = self.name.as_str();
        let invalid = |field: &'static str, reason: String| OptionsError::InvalidValue {
            session: session.to_string(),
            field,
            reason,
        };
        if self.brokers.is_empty() {
            return Err(OptionsError::NoBrokers {
                session: session.to_string(),
            });
        }
        let brokers = self
            .brokers
            .iter()
            .map(|b| BrokerUrl::parse(session, b))
            .collect::<Result<Vec<_>, _>>()?;
        // A `tls` section means "this session must be secured": a plain broker in the
        // list would be a silent downgrade on failover (credentials in clear text), so it
        // is refused rather than ignored or upgraded to TLS on a plain port.
        if self.tls.is_some() {
            if let Some(plain) = brokers.iter().find(|b| !b.transport.is_tls()) {
                return Err(invalid(
                    "tls",
                    format!(
                        "set, but broker {:?} is not a TLS URL (use mqtts://, ssl://, tls:// or \
                         wss://, or remove the tls section)",
                        plain.url
                    ),
                ));
            }
        }
        let v5 = self.protocol == Protocol::V5;
        if v5 && self.connect.keep_alive < Duration::from_secs(5) {
            // rumqttc's MQTT 5 client takes no keep-alive below 5 s (nor zero).
            return Err(invalid(
                "connect.keep_alive",
                format!(
                    "{:?}: an MQTT 5 session needs a keep-alive of at least 5 s",
                    self.connect.keep_alive
                ),
            ));
        }
        if let Some(expiry) = self.connect.session_expiry {
            if !v5 {
                return Err(invalid(
                    "connect.session_expiry",
                    "needs MQTT 5 (protocol = \"5\"); MQTT 3.1.1 keeps a session with clean_session = false".into(),
                ));
            }
            if expiry.as_secs() > u64::from(u32::MAX) || expiry.subsec_nanos() != 0 {
                return Err(invalid(
                    "connect.session_expiry",
                    format!("{expiry:?}: must be whole seconds up to {} s", u32::MAX),
                ));
            }
        }
        if let Some(id) = self.client_id.as_ref().filter(|id| !(v5 && id.is_empty())) {
            let bad = |reason: &str| OptionsError::InvalidClientId {
                session: session.to_string(),
                reason: reason.to_string(),
            };
            if id.is_empty() {
                return Err(bad(
                    "empty (leave it out to have one generated; MQTT 5 sessions may leave it empty for the broker to assign one)",
                ));
            }
            if id.len() > 65535 {
                return Err(bad("longer than 65535 bytes [MQTT-1.5.3-1]"));
            }
            if id.contains('\0') {
                return Err(bad("contains U+0000 [MQTT-1.5.3-2]"));
            }
        }
        if self.username.is_none() && self.password.is_some() {
            return Err(invalid(
                "password",
                "a password needs a username [MQTT-3.1.2-22]".into(),
            ));
        }
        let ka = self.connect.keep_alive;
        if !(ka.is_zero()
            || (ka >= Duration::from_secs(1)
                && ka <= Duration::from_secs(65535)
                && ka.subsec_nanos() == 0))
        {
            return Err(invalid(
                "connect.keep_alive",
                format!("{ka:?}: must be 0 (off) or whole seconds from 1 s to 65535 s"),
            ));
        }
        if self.connect.connect_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "connect.connect_timeout",
                "must be at least 1 s".into(),
            ));
        }
        if let Some(will) = &self.connect.will {
            validate_topic_name(&will.topic).map_err(|source| OptionsError::InvalidWillTopic {
                session: session.to_string(),
                source,
            })?;
        }
        let r = &self.reconnect;
        if r.initial_delay < Duration::from_millis(1) {
            return Err(invalid(
                "reconnect.initial_delay",
                "must be at least 1 ms (zero would retry in a busy loop)".into(),
            ));
        }
        if r.max_delay < r.initial_delay {
            return Err(invalid(
                "reconnect.max_delay",
                format!(
                    "{:?} is below initial_delay {:?}",
                    r.max_delay, r.initial_delay
                ),
            ));
        }
        if !(r.factor.is_finite() && r.factor >= 1.0) {
            return Err(invalid(
                "reconnect.factor",
                format!("{} must be >= 1.0", r.factor),
            ));
        }
        if !(r.jitter.is_finite() && (0.0..=1.0).contains(&r.jitter)) {
            return Err(invalid(
                "reconnect.jitter",
                format!("{} must be between 0.0 and 1.0", r.jitter),
            ));
        }
        if r.max_attempts == Some(0) {
            return Err(invalid(
                "reconnect.max_attempts",
                "must be at least 1 (leave it out to retry forever)".into(),
            ));
        }
        let p = &self.performance;
        if p.message_channel_size == 0 || p.message_channel_size > 1_000_000 {
            return Err(invalid(
                "performance.message_channel_size",
                format!("{} must be between 1 and 1000000", p.message_channel_size),
            ));
        }
        if p.max_message_size == 0 || p.max_message_size > MQTT_MAX_PAYLOAD {
            return Err(invalid(
                "performance.max_message_size",
                format!(
                    "{} must be between 1 and {MQTT_MAX_PAYLOAD}",
                    p.max_message_size
                ),
            ));
        }
        if p.max_pending_messages == 0 || p.max_pending_messages > 10_000_000 {
            return Err(invalid(
                "performance.max_pending_messages",
                format!("{} must be between 1 and 10000000", p.max_pending_messages),
            ));
        }
        if p.inflight == 0 || p.inflight == u16::MAX {
            return Err(invalid(
                "performance.inflight",
                format!("{} must be between 1 and 65534", p.inflight),
            ));
        }
        if p.receive_maximum == Some(0) {
            // Zero is a protocol error [MQTT-3.1.2.11.3].
            return Err(invalid(
                "performance.receive_maximum",
                "0 must be between 1 and 65535".into(),
            ));
        }
        if p.write_timeout.is_zero() {
            return Err(invalid(
                "performance.write_timeout",
                "must be above zero".into(),
            ));
        }
        if let Some(stall) = p.max_stall {
            if stall >= self.connect.keep_alive && !self.connect.keep_alive.is_zero() {
                return Err(invalid(
                    "performance.max_stall",
                    format!(
                        "{stall:?} must be below the keep-alive ({:?}), or the connection would lapse",
                        self.connect.keep_alive
                    ),
                ));
            }
        }
        if p.unrouted_hold > Duration::from_secs(3600) {
            return Err(invalid(
                "performance.unrouted_hold",
                "must be at most 1h (an unrouted message holds back later acknowledgements)".into(),
            ));
        }
        if p.read_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid(
                "performance.read_timeout",
                "must be above zero (leave it out for 1.5 x keep-alive)".into(),
            ));
        }
        Ok(brokers)
    }

    /// The TLS configuration when any of `brokers` uses TLS: reads the CA, client
    /// certificate and key files (or the system's trust store).
    pub(crate) fn tls_config(
        &self,
        brokers: &[BrokerUrl],
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, OptionsError> {
        if !brokers.iter().any(|b| b.transport.is_tls()) {
            return Ok(None);
        }
        let defaults = TlsOptions::default();
        crate::tls::client_config(self.tls.as_ref().unwrap_or(&defaults))
            .map(Some)
            .map_err(|source| OptionsError::Tls {
                session: self.name.clone(),
                source,
            })
    }

    /// The client id this session uses: the configured one, or a generated one.
    pub(crate) fn effective_client_id(&self) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None if self.connect.persistent || !self.connect.clean_session => {
                format!("mqtt-sessions-{}", self.name)
            }
            None => format!("mqtt-sessions-{}-{:08x}", self.name, fastrand::u32(..)),
        }
    }

    /// The read timeout in effect (1.5 x keep-alive when not set; none when keep-alive is off).
    pub(crate) fn effective_read_timeout(&self) -> Option<Duration> {
        self.performance.read_timeout.or_else(|| {
            (!self.connect.keep_alive.is_zero()).then(|| self.connect.keep_alive.mul_f64(1.5))
        })
    }

    /// How long a full `Backpressure` route may stop the session's reading:
    /// `performance.max_stall`, or half the keep-alive (5 s without a keep-alive).
    pub(crate) fn effective_max_stall(&self) -> Duration {
        self.performance.max_stall.unwrap_or_else(|| {
            if self.connect.keep_alive.is_zero() {
                Duration::from_secs(5)
            } else {
                self.connect.keep_alive / 2
            }
        })
    }
}

/// Checks a session name (also a route or rule name): 1 to 128 characters of any UTF-8
/// text (`"plant-1"`, `"生产设备"`, `"line 3/press"`) without control characters. Control
/// characters are refused because a name is a store key (NUL separates key parts), a
/// metric label value and a log field.
pub fn validate_name(name: &str) -> Result<(), OptionsError> {
    let bad = |reason| OptionsError::InvalidName {
        name: name.chars().take(140).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.chars().count() > 128 {
        return Err(bad("longer than 128 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("control characters are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SessionOptions {
        SessionOptions::new("s1", "mqtt://127.0.0.1:1883")
    }

    #[test]
    fn defaults_follow_the_go_original() {
        let o = base();
        assert_eq!(o.connect.keep_alive, Duration::from_secs(60));
        assert_eq!(o.connect.connect_timeout, Duration::from_secs(30));
        assert_eq!(o.reconnect.max_delay, Duration::from_secs(120));
        assert_eq!(o.performance.write_timeout, Duration::from_secs(30));
        assert_eq!(o.performance.message_channel_size, 100);
        assert_eq!(o.performance.max_message_size, 32 * 1024);
        assert_eq!(o.performance.max_pending_messages, 1000);
        assert!(
            o.connect.clean_session && o.connect.auto_reconnect && o.connect.resume_subscriptions
        );
        assert!(o.validate().is_ok());
    }

    #[test]
    fn tls_section_with_a_plain_broker_is_refused() {
        let mut o = SessionOptions::new("s1", "mqtts://127.0.0.1").broker("mqtt://127.0.0.1");
        o.tls = Some(TlsOptions {
            skip_verify: true,
            ..TlsOptions::default()
        });
        let err = o.validate().unwrap_err();
        assert!(
            matches!(err, OptionsError::InvalidValue { field: "tls", .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("\"mqtt://127.0.0.1\" is not a TLS URL"),
            "{err}"
        );
        o.brokers.pop();
        assert!(o.validate().is_ok());
    }

    #[test]
    fn tls_files_are_checked_by_validate() {
        let mut o = SessionOptions::new("s1", "mqtts://127.0.0.1");
        o.tls = Some(TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        });
        let err = o.validate().unwrap_err();
        assert!(matches!(err, OptionsError::Tls { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "session \"s1\": tls.ca_file \"/nonexistent/ca.pem\": no such file"
        );
    }

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let cases = [
            ("mqtt://h", Transport::Tcp, 1883),
            ("tcp://h:1999", Transport::Tcp, 1999),
            ("mqtts://h", Transport::Tls, 8883),
            ("ssl://h", Transport::Tls, 8883),
            ("tls://h:9", Transport::Tls, 9),
            ("ws://h:8080/mqtt", Transport::Ws, 8080),
            ("wss://h/mqtt", Transport::Wss, 443),
            ("mqtt://[::1]:1883", Transport::Tcp, 1883),
        ];
        for (url, t, port) in cases {
            let b = BrokerUrl::parse("s", url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((b.transport, b.port), (t, port), "{url}");
        }
    }

    #[test]
    fn bad_options_give_typed_errors() {
        type Edit = fn(&mut SessionOptions);
        let cases: Vec<(&str, Edit, &str)> = vec![
            ("empty name", |o| o.name.clear(), "invalid session name"),
            (
                "control character in name",
                |o| o.name = "a\nb".into(),
                "invalid session name",
            ),
            ("no brokers", |o| o.brokers.clear(), "no broker URL"),
            (
                "bad scheme",
                |o| o.brokers = vec!["http://h".into()],
                "unknown scheme",
            ),
            (
                "no host",
                |o| o.brokers = vec!["mqtt://".into()],
                "invalid broker URL",
            ),
            (
                "not a url",
                |o| o.brokers = vec!["localhost:1883".into()],
                "invalid broker URL",
            ),
            (
                "empty client id",
                |o| o.client_id = Some(String::new()),
                "invalid client id",
            ),
            (
                "nul client id",
                |o| o.client_id = Some("a\0b".into()),
                "MQTT-1.5.3-2",
            ),
            (
                "sub-second keep-alive",
                |o| o.connect.keep_alive = Duration::from_millis(500),
                "keep_alive",
            ),
            (
                "zero initial delay",
                |o| o.reconnect.initial_delay = Duration::ZERO,
                "busy loop",
            ),
            (
                "max below initial",
                |o| o.reconnect.max_delay = Duration::from_millis(1),
                "max_delay",
            ),
            (
                "factor below one",
                |o| o.reconnect.factor = 0.5,
                "reconnect.factor",
            ),
            (
                "jitter above one",
                |o| o.reconnect.jitter = 1.5,
                "reconnect.jitter",
            ),
            (
                "zero channel",
                |o| o.performance.message_channel_size = 0,
                "message_channel_size",
            ),
            (
                "zero max size",
                |o| o.performance.max_message_size = 0,
                "max_message_size",
            ),
            (
                "zero pending",
                |o| o.performance.max_pending_messages = 0,
                "max_pending_messages",
            ),
            ("zero inflight", |o| o.performance.inflight = 0, "inflight"),
            (
                "zero receive maximum",
                |o| o.performance.receive_maximum = Some(0),
                "receive_maximum",
            ),
            (
                "wildcard will",
                |o| {
                    o.connect.will = Some(WillOptions {
                        topic: "a/#".into(),
                        payload: String::new(),
                        qos: QoS::AtMostOnce,
                        retain: false,
                    })
                },
                "will topic",
            ),
            (
                "password without user",
                |o| o.password = Some(Secret::new("x")),
                "needs a username",
            ),
        ];
        for (what, edit, needle) in cases {
            let mut o = base();
            edit(&mut o);
            let err = o.validate().expect_err(what).to_string();
            assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn debug_and_serialisation_never_show_the_password() {
        let o = base().credentials("user", "hunter2-secret");
        assert!(!format!("{o:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&o)
            .unwrap_or_default()
            .contains("hunter2"));
        assert_eq!(
            o.password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
    }

    #[test]
    fn options_deserialise_with_durations_and_reject_unknown_fields() {
        let json = r#"{"name":"a","brokers":["mqtt://h"],"connect":{"keep_alive":"5s"},
                       "reconnect":{"initial_delay":"250ms"}}"#;
        let o: SessionOptions = serde_json::from_str(json).unwrap();
        assert_eq!(o.connect.keep_alive, Duration::from_secs(5));
        assert_eq!(o.reconnect.initial_delay, Duration::from_millis(250));
        let bad = r#"{"name":"a","brokers":["mqtt://h"],"kepalive":"5s"}"#;
        assert!(serde_json::from_str::<SessionOptions>(bad).is_err());
    }

    #[test]
    fn mqtt5_options_are_checked_where_they_differ_from_3_1_1() {
        let mut o = base();
        o.protocol = Protocol::V5;
        o.connect.keep_alive = Duration::from_secs(5);
        o.client_id = Some(String::new());
        o.connect.session_expiry = Some(Duration::from_secs(60));
        o.validate().unwrap();
        o.connect.keep_alive = Duration::from_secs(2);
        assert!(matches!(
            o.validate(),
            Err(OptionsError::InvalidValue {
                field: "connect.keep_alive",
                ..
            })
        ));
        let mut o = base();
        o.connect.session_expiry = Some(Duration::from_secs(60));
        assert!(matches!(
            o.validate(),
            Err(OptionsError::InvalidValue {
                field: "connect.session_expiry",
                ..
            })
        ));
        o.connect.session_expiry = None;
        o.client_id = Some(String::new());
        assert!(matches!(
            o.validate(),
            Err(OptionsError::InvalidClientId { .. })
        ));
    }

    #[test]
    fn generated_client_ids_are_stable_only_for_persistent_sessions() {
        let mut o = base();
        assert_ne!(o.effective_client_id(), o.effective_client_id());
        o.connect.clean_session = false;
        assert_eq!(o.effective_client_id(), "mqtt-sessions-s1");
    }

    #[test]
    fn names_are_any_text_of_1_to_128_characters_without_control_characters() {
        let cases: &[(&str, bool)] = &[
            ("plant-1", true),
            ("生产设备", true),
            ("line 3/press #2", true),
            (".hidden", true),
            ("a:status/#", true),
            ("", false),
            ("a\nb", false),
            ("a\0b", false),
            ("tab\there", false),
            ("\u{7f}", false),
        ];
        for &(name, ok) in cases {
            assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
        }
        // 128 characters (384 bytes) is fine; 129 is not.
        assert!(validate_name(&"设".repeat(128)).is_ok());
        assert!(validate_name(&"设".repeat(129)).is_err());
    }
}
