//! The daemon's TOML configuration: sessions (the library's option types), their
//! subscriptions, forwarding rules, the HTTP endpoint, the embedded broker and the store.
//!
//! [`Config::load`] reads, parses (`deny_unknown_fields` everywhere) and validates a file
//! (see `load.rs` and `validate.rs`); every error is a [`ConfigError`] naming the file,
//! the line and column, and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use super::error::{ConfigError, ConfigErrorKind};
use super::size::ByteSize;
use mqtt_sessions::credentials::Secret;
use mqtt_sessions::message::QoS;
use mqtt_sessions::options::{
    ConnectOptions, PerformanceOptions, Protocol, ReconnectOptions, SessionOptions, TlsOptions,
};

/// The annotated default configuration printed by `mqtt-sessions print-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../gateway.toml");

/// A daemon configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long a graceful shutdown (SIGINT/SIGTERM) may take before the daemon exits
    /// anyway. Default 10 s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Worker threads running the sessions (each session lives on one). Default: one per
    /// core. 1 to 1024.
    #[serde(default)]
    pub workers: Option<usize>,
    /// `[metrics]`: what `/metrics` exports.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The sled store; absent: state is kept in memory only.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// The HTTP endpoints (`/healthz`, `/readyz`, `/sessions`, `/metrics`); absent: none.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// An MQTT broker run inside the daemon; absent: none.
    #[serde(default)]
    pub embedded_broker: Option<EmbeddedBrokerConfig>,
    /// The MQTT sessions.
    #[serde(default)]
    pub sessions: Vec<SessionConfig>,
    /// Forwarding rules.
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
    /// The file this configuration was read from (reloaded on SIGHUP).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// Things that are allowed but unwise (an inline password, ...), found by validation.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-session series: `"off"` (default: totals, sessions by state and one latency
    /// histogram, the same few dozen series at any number of sessions), `"counters"`
    /// (every per-session counter and gauge) or `"full"` (also a latency histogram per
    /// session). See the README's "Metrics at scale" for the measured sizes and why.
    #[serde(default = "default_per_session")]
    pub per_session: mqtt_sessions::metrics::PerSessionMetrics,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_session: default_per_session(),
        }
    }
}

/// The daemon's default `per_session`: `"off"`, the one mode whose scrape does not grow
/// with the fleet (the library's default stays `"full"`).
fn default_per_session() -> mqtt_sessions::metrics::PerSessionMetrics {
    mqtt_sessions::metrics::PerSessionMetrics::Off
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database (created when missing); absent: in memory.
    #[serde(default)]
    pub path: Option<Spanned<PathBuf>>,
    /// Under sustained load, the store flushes at most once per this interval, so that a
    /// steady stream of forwarded messages shares fsyncs (a lone write is not delayed).
    /// Default 5 ms; `"0s"` flushes every group at once; at most 100 ms.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
}

fn default_flush_interval() -> Duration {
    Duration::from_millis(5)
}

/// `[http]`: where the endpoints listen, and who may read them (the conventions of the
/// Prometheus exporter-toolkit's web configuration: TLS from PEM files, basic-auth
/// passwords stored as bcrypt hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:9883` (loopback only). Listening beyond
    /// loopback without `basic_auth_users` or `bearer_token_file` logs a warning.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// `[http.tls]`: serve HTTPS with this certificate and key; absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<HttpTlsConfig>,
    /// `[http.basic_auth_users]`: user name → bcrypt hash of the password
    /// (`htpasswd -nbBC 10 user password`). Absent or empty: no basic auth.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, Spanned<String>>,
    /// A file holding a bearer token (`Authorization: Bearer <token>`); absent: none.
    #[serde(default)]
    pub bearer_token_file: Option<Spanned<PathBuf>>,
    /// Paths served without credentials even when authentication is on (e.g.
    /// `["/healthz", "/readyz"]` for probes). Default none.
    #[serde(default)]
    pub open_paths: Vec<Spanned<String>>,
}

/// `[http.tls]`: PEM files (relative paths are resolved against the config file's
/// directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// The certificate chain (PEM), server certificate first.
    pub cert_file: Spanned<PathBuf>,
    /// The private key (PEM: PKCS #8, PKCS #1 or SEC1).
    pub key_file: Spanned<PathBuf>,
}

impl HttpConfig {
    /// The library's [`HttpOptions`](mqtt_sessions::http::HttpOptions) of this section: reads the
    /// bearer token and checks the hashes and TLS files. Relative paths are resolved
    /// against `base`. The error comes with the byte range of the setting at fault.
    pub fn options(
        &self,
        base: &Path,
    ) -> Result<
        mqtt_sessions::http::HttpOptions,
        (std::ops::Range<usize>, mqtt_sessions::http::HttpError),
    > {
        let mut o = mqtt_sessions::http::HttpOptions::new();
        for (user, hash) in &self.basic_auth_users {
            o = o
                .basic_auth_user(user, hash.get_ref())
                .map_err(|e| (hash.span(), e))?;
        }
        if let Some(file) = &self.bearer_token_file {
            o = o
                .bearer_token_file(&base.join(file.get_ref()))
                .map_err(|e| (file.span(), e))?;
        }
        for path in &self.open_paths {
            o = o.open_path(path.get_ref()).map_err(|e| (path.span(), e))?;
        }
        if let Some(tls) = &self.tls {
            o = o.tls(
                base.join(tls.cert_file.get_ref()),
                base.join(tls.key_file.get_ref()),
            );
            o.check_tls().map_err(|e| {
                let span = match &e {
                    mqtt_sessions::http::HttpError::TlsFile {
                        what: "certificate",
                        ..
                    } => tls.cert_file.span(),
                    _ => tls.key_file.span(),
                };
                (span, e)
            })?;
        }
        Ok(o)
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9883))
}

/// `[embedded_broker]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Address of its MQTT 3.1.1 listener. Default `127.0.0.1:1883`. An address that is
    /// not loopback needs `allow_remote = true`: the broker has no authentication or TLS.
    #[serde(default = "default_broker_listen")]
    pub listen: Spanned<SocketAddr>,
    /// Accept a `listen` address beyond loopback, knowing that anyone who reaches it may
    /// connect, publish and subscribe without credentials. Default false.
    #[serde(default)]
    pub allow_remote: bool,
    /// Largest payload it accepts. Default `"256KiB"`.
    #[serde(default = "default_broker_max_message_size")]
    pub max_message_size: ByteSize,
    /// Most client connections at once. Default 1000.
    #[serde(default = "default_broker_max_connections")]
    pub max_connections: usize,
}

fn default_broker_listen() -> Spanned<SocketAddr> {
    Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 1883)))
}
fn default_broker_max_message_size() -> ByteSize {
    ByteSize(256 * 1024)
}
fn default_broker_max_connections() -> usize {
    1000
}

/// `[[sessions]]`: the library's [`SessionOptions`], plus where the password comes from
/// and the session's subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Unique session name: 1 to 128 characters of any text without control characters
    /// (`"edge"`, `"生产设备"`).
    pub name: Spanned<String>,
    /// Broker URLs, tried in order on every connection attempt.
    pub brokers: Vec<String>,
    /// MQTT client id; generated when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Inline password: accepted with a warning; prefer `password_file` or `password_env`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (one line; a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// Connection behaviour.
    #[serde(default)]
    pub connect: ConnectOptions,
    /// Reconnect backoff.
    #[serde(default)]
    pub reconnect: ReconnectOptions,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Queue sizes, limits and timeouts.
    #[serde(default)]
    pub performance: PerformanceConfig,
    /// MQTT protocol version (`"3.1.1"` or `"5"`).
    #[serde(default)]
    pub protocol: Protocol,
    /// `[[sessions.subscriptions]]`: filters this session subscribes to (each a route
    /// that logs at debug level and counts).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Does `/readyz` wait for this session? Default true. A session whose broker may be
    /// away (a backup link) can say false: it is then neither waited for nor listed.
    #[serde(default = "default_true")]
    pub required_for_ready: bool,
    /// A topic on which the daemon announces this session's link state, like mosquitto's
    /// bridge notifications: a retained `1` on every connect, a retained `0` as the
    /// session's will and at a clean shutdown. Off by default; not with `connect.will`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state_topic: Option<Spanned<String>>,
    /// The password, once read from wherever it comes from (set by validation).
    #[serde(skip)]
    pub(crate) resolved_password: Option<Secret>,
    /// A `[[forward]]` rule publishes through this session (set by validation): its
    /// `inflight` defaults to [`FORWARD_TARGET_INFLIGHT`].
    #[serde(skip)]
    pub(crate) forward_target: bool,
    /// The worker shared by the sessions joined by forwarding rules (set by validation;
    /// `performance.worker` wins).
    #[serde(skip)]
    pub(crate) forward_worker: Option<usize>,
    /// A `[[forward]]` rule takes messages from this session (set by validation): on MQTT
    /// 5 its `receive_maximum` defaults to [`FORWARD_SOURCE_RECEIVE_MAXIMUM`].
    #[serde(skip)]
    pub(crate) forward_source: bool,
}

/// The default `performance.inflight` of a session that a forwarding rule publishes
/// through, hence the rule's default window: enough for a rule to carry 50,000 msgs/s
/// over a link with 20 ms of round trip (a window of `n` messages carries at most `n`
/// per round trip; the library's default of 100 would cap it at 5,000).
pub const FORWARD_TARGET_INFLIGHT: u16 = 1000;

/// The default `performance.receive_maximum` of an MQTT 5 session that a forwarding rule
/// takes messages from: room for a rule's default window ([`FORWARD_TARGET_INFLIGHT`])
/// and its route queue, so that the source broker sends that many before it waits for
/// acknowledgements. It keeps the rest in its own queue, where mosquitto's limit
/// (`max_queued_messages`, 1,000 by default) counts only what is past this window; without
/// it mosquitto allows an MQTT 5 client 20 messages in flight and counts every other
/// unacknowledged one against that limit.
pub const FORWARD_SOURCE_RECEIVE_MAXIMUM: u16 = 2000;

/// [`PerformanceOptions`] as written in a config file (`max_message_size` takes units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Capacity of each message channel. Default 100.
    pub message_channel_size: usize,
    /// Largest payload sent or accepted (`"32KiB"` or bytes). Default 32 KiB.
    pub max_message_size: ByteSize,
    /// QoS >= 1 publishes that may wait for a connection or an acknowledgement. Default 1000.
    pub max_pending_messages: usize,
    /// QoS >= 1 publishes in flight. Default 100; [`FORWARD_TARGET_INFLIGHT`] for a
    /// session that a `[[forward]]` rule publishes through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight: Option<u16>,
    /// How long a publish may wait for its acknowledgement. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Silence after which a connection is replaced. Default 1.5 x keep-alive.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    /// How long a QoS >= 1 message that matches no route waits, unacknowledged, for one
    /// before it is dropped and counted as `unrouted`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub unrouted_hold: Duration,
    /// How long the session may stop reading while a route's queue is full (the broker
    /// holds the messages meanwhile). Default: half the keep-alive.
    #[serde(with = "humantime_serde")]
    pub max_stall: Option<Duration>,
    /// Run the session on this worker thread (index modulo `workers`). Default: sessions
    /// joined by `[[forward]]` rules share one worker (a forwarded message never crosses
    /// threads), the others go to the least loaded worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// MQTT 5: the most QoS >= 1 messages the broker may have in flight to the session
    /// (Receive Maximum). Default: none sent (the broker chooses; mosquitto 20);
    /// [`FORWARD_SOURCE_RECEIVE_MAXIMUM`] for a session a `[[forward]]` rule takes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<u16>,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        let d = PerformanceOptions::default();
        PerformanceConfig {
            message_channel_size: d.message_channel_size,
            max_message_size: ByteSize(d.max_message_size),
            max_pending_messages: d.max_pending_messages,
            inflight: None,
            write_timeout: d.write_timeout,
            read_timeout: d.read_timeout,
            unrouted_hold: d.unrouted_hold,
            max_stall: d.max_stall,
            worker: None,
            receive_maximum: None,
        }
    }
}

impl From<&PerformanceConfig> for PerformanceOptions {
    fn from(p: &PerformanceConfig) -> Self {
        // Field by field: `PerformanceOptions` is `#[non_exhaustive]`; an option the
        // library adds later keeps its default here until the config learns it.
        let mut o = PerformanceOptions::default();
        o.message_channel_size = p.message_channel_size;
        o.max_message_size = p.max_message_size.bytes();
        o.max_pending_messages = p.max_pending_messages;
        if let Some(n) = p.inflight {
            o.inflight = n;
        }
        o.write_timeout = p.write_timeout;
        o.read_timeout = p.read_timeout;
        o.unrouted_hold = p.unrouted_hold;
        o.max_stall = p.max_stall;
        o.worker = p.worker;
        o.receive_maximum = p.receive_maximum;
        o
    }
}

/// `[[sessions.subscriptions]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Topic filter (`sensors/#`, `$share/group/jobs/+`).
    pub filter: Spanned<String>,
    /// Subscription QoS. Default 1.
    #[serde(default = "default_qos")]
    pub qos: QoS,
    /// The route's name (the `route` label of the route metrics). Default
    /// `"<session>:<filter>"`, so it stays the same across restarts and reloads.
    #[serde(default)]
    pub name: Option<String>,
}

impl SubscriptionConfig {
    /// The route name of this subscription of `session`.
    pub fn route_name(&self, session: &str) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{session}:{}", self.filter.get_ref()))
    }
}

fn default_true() -> bool {
    true
}

fn default_qos() -> QoS {
    QoS::AtLeastOnce
}

fn default_template() -> Spanned<String> {
    Spanned::new(0..0, "{topic}".to_string())
}

/// `[[forward]]`: copy what matches `filter` on session `from` to one session (`to`, with
/// `topic`, `qos` and `retain` on the rule) or to several (`[[forward.targets]]`, each
/// with its own `to`, `topic`, `qos` and `retain`). A QoS >= 1 message is acknowledged to
/// the source broker once every target has published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Unique rule name (1 to 128 characters, no control characters).
    pub name: Spanned<String>,
    /// The session the messages come from.
    pub from: Spanned<String>,
    /// The topic filter on `from` (subscribed at QoS 1).
    pub filter: Spanned<String>,
    /// The one target session (the single-target form); absent when `targets` lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Spanned<String>>,
    /// Output topic of the single-target form: `{topic}` is the incoming topic,
    /// `{session}` the `from` session, `{1}`, `{2}`, ... what the filter's wildcards
    /// matched. Default `"{topic}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Spanned<String>>,
    /// QoS of the single-target form's publish: 0, 1, 2 or `"keep"` (the incoming
    /// message's). Default 1 (at least once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<Keep<QoS>>,
    /// Retain flag of the single-target form's publish: `true`, `false` or `"keep"` (the
    /// incoming message's). Default `"keep"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Keep<bool>>,
    /// Forward retained messages the source broker sends when the rule (re)subscribes?
    /// Default false: they are old news, already forwarded when they were published; a
    /// restart or a reconnect would forward them again as new.
    #[serde(default)]
    pub forward_retained: bool,
    /// `[[forward.targets]]`: several targets, each with its own topic, QoS and retain
    /// flag (instead of `to`, `topic`, `qos` and `retain` on the rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ForwardTarget>,
    /// Messages each target may have in flight at once (taken from the source, not yet
    /// handled by the target: durable in its outbox with a `[store]`, acknowledged by its
    /// broker without). Default: the target session's `performance.inflight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u16>,
}

/// One target of a forwarding rule: a session and how to publish through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTarget {
    /// The session the messages are published through (at most one target per session
    /// in a rule; it is the `target` label of the rule's metrics).
    pub to: Spanned<String>,
    /// Output topic template (as the rule's `topic`). Default `"{topic}"`.
    #[serde(default = "default_template")]
    pub topic: Spanned<String>,
    /// QoS of the publish: 0, 1, 2 or `"keep"`. Default 1.
    #[serde(default = "default_forward_qos")]
    pub qos: Keep<QoS>,
    /// Retain flag of the publish: `true`, `false` or `"keep"`. Default `"keep"`.
    #[serde(default)]
    pub retain: Keep<bool>,
}

impl ForwardConfig {
    /// Fills in the single-target form's defaults (`topic`, `qos`, `retain`), so that
    /// `print-config` shows them; a rule with `targets` is left as it is.
    pub fn fill_defaults(&mut self) {
        if self.targets.is_empty() && self.to.is_some() {
            self.topic.get_or_insert_with(default_template);
            self.qos.get_or_insert_with(default_forward_qos);
            self.retain.get_or_insert_with(Keep::default);
        }
    }

    /// The rule's targets: `targets`, or the one the single-target form describes (none
    /// when the rule names no target at all, which validation refuses).
    pub fn all_targets(&self) -> Vec<ForwardTarget> {
        if !self.targets.is_empty() {
            return self.targets.clone();
        }
        self.to
            .iter()
            .map(|to| ForwardTarget {
                to: to.clone(),
                topic: self.topic.clone().unwrap_or_else(default_template),
                qos: self.qos.unwrap_or_else(default_forward_qos),
                retain: self.retain.unwrap_or_default(),
            })
            .collect()
    }
}

fn default_forward_qos() -> Keep<QoS> {
    Keep::Set(QoS::AtLeastOnce)
}

/// A setting that is either `"keep"` (take the incoming message's value) or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep<T> {
    /// The incoming message's value.
    #[default]
    Keep,
    /// This value.
    Set(T),
}

impl<T: Copy> Keep<T> {
    /// The value for a message whose own value is `incoming`.
    pub fn apply(self, incoming: T) -> T {
        match self {
            Keep::Keep => incoming,
            Keep::Set(v) => v,
        }
    }
}

/// `"keep"`, as written in a file.
#[derive(Serialize, Deserialize)]
enum KeepWord {
    #[serde(rename = "keep")]
    Keep,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum KeepRepr<T> {
    Word(KeepWord),
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Keep<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match KeepRepr::deserialize(d)? {
            KeepRepr::Word(KeepWord::Keep) => Keep::Keep,
            KeepRepr::Value(v) => Keep::Set(v),
        })
    }
}

impl<T: Serialize> Serialize for Keep<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::Keep => KeepWord::Keep.serialize(s),
            Keep::Set(v) => v.serialize(s),
        }
    }
}

impl Config {
    /// The effective configuration as TOML: what the file says, every default filled in,
    /// relative paths resolved, `${ENV}` substituted (inline passwords print as `***`).
    /// `check-config` accepts it.
    pub fn effective(&self) -> Result<String, ConfigError> {
        let body = toml::to_string_pretty(self).map_err(|e| ConfigError {
            file: self.path.clone().unwrap_or_default(),
            location: None,
            reason: Box::new(ConfigErrorKind::Print(e.to_string())),
        })?;
        let from = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!(" of {}", p.display()));
        Ok(format!(
            "# The effective configuration{from}: every default filled in,\n\
             # relative paths resolved against the file's directory.\n\n{body}"
        ))
    }

    /// The link-state topics the sessions ask for: session name → `link_state_topic`.
    pub(crate) fn link_state_topics(&self) -> BTreeMap<String, String> {
        self.sessions
            .iter()
            .filter_map(|s| {
                s.link_state_topic
                    .as_ref()
                    .map(|t| (s.name().to_string(), t.get_ref().clone()))
            })
            .collect()
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

impl SessionConfig {
    /// The library options of this session (the password as resolved by validation).
    pub fn options(&self) -> SessionOptions {
        let mut o = SessionOptions::new(self.name.get_ref().clone(), String::new());
        o.brokers = self.brokers.clone();
        o.client_id = self.client_id.clone();
        o.username = self.username.clone();
        o.password = self.resolved_password.clone().or(self.password.clone());
        o.connect = self.connect.clone();
        if let Some(topic) = &self.link_state_topic {
            o.connect.will = Some(
                mqtt_sessions::options::WillOptions::new(
                    topic.get_ref().clone(),
                    super::link_state::DOWN,
                )
                .qos(mqtt_sessions::QoS::AtLeastOnce)
                .retain(true),
            );
        }
        o.reconnect = self.reconnect.clone();
        o.tls = self.tls.clone();
        o.performance = PerformanceOptions::from(&self.performance);
        if self.forward_target && self.performance.inflight.is_none() {
            o.performance.inflight = FORWARD_TARGET_INFLIGHT;
        }
        o.performance.worker = self.performance.worker.or(self.forward_worker);
        if self.forward_source && self.protocol == Protocol::V5 {
            o.performance.receive_maximum = self
                .performance
                .receive_maximum
                .or(Some(FORWARD_SOURCE_RECEIVE_MAXIMUM));
        }
        o.protocol = self.protocol;
        o
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// Replaces every `${NAME}` inside a TOML string of `text` (not in comments, keys or
/// numbers) by `lookup(NAME)`; `$${` stands for a literal `${`. An unset variable is an
/// error: its byte offset and name.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    /// Where the scanner is.
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        Code,
        Comment,
        /// In a string closed by this delimiter.
        Str(&'static str),
    }
    const DELIMITERS: [&str; 4] = ["\"\"\"", "'''", "\"", "'"];
    let mut out = String::with_capacity(text.len());
    let mut at = At::Code;
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        let rest = &text[i..];
        match at {
            At::Code if c == '#' => at = At::Comment,
            At::Code => {
                if let Some(d) = DELIMITERS.into_iter().find(|d| rest.starts_with(d)) {
                    out.push_str(d);
                    i += d.len();
                    at = At::Str(d);
                    continue;
                }
            }
            At::Comment if c == '\n' => at = At::Code,
            At::Comment => {}
            At::Str(d) => {
                if rest.starts_with(d) {
                    out.push_str(d);
                    i += d.len();
                    at = At::Code;
                    continue;
                }
                if c == '\\' && d.starts_with('"') {
                    // An escape: the escaped character is copied as it is.
                    let n = rest[1..].chars().next().map_or(0, char::len_utf8);
                    out.push_str(&rest[..1 + n]);
                    i += 1 + n;
                    continue;
                }
                if rest.starts_with("$${") {
                    out.push_str("${");
                    i += 3;
                    continue;
                }
                if let Some(body) = rest.strip_prefix("${") {
                    if let Some(end) = body.find('}') {
                        let name = &body[..end];
                        if !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            out.push_str(&lookup(name).ok_or((i, name.to_string()))?);
                            i += 2 + end + 1;
                            continue;
                        }
                    }
                }
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(out)
}

/// Line and column (from 1; the column counts characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn environment_variables_are_substituted_and_dollars_escaped() {
        let env = |n: &str| (n == "HOST").then(|| "broker.local".to_string());
        let cases = [
            (
                "a = \"mqtt://${HOST}:1883\"",
                Ok("a = \"mqtt://broker.local:1883\""),
            ),
            ("a = \"$${HOST}\"", Ok("a = \"${HOST}\"")),
            ("a = \"$2y$10$abc\"", Ok("a = \"$2y$10$abc\"")),
            ("a = \"${not-a-name}\"", Ok("a = \"${not-a-name}\"")),
            (
                "a = 1\nb = \"${MISSING}\"",
                Err((11, "MISSING".to_string())),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                substitute_env(text, env),
                want.map(str::to_string),
                "{text}"
            );
        }
    }

    #[test]
    fn the_default_config_is_valid() {
        let c = Config::parse(DEFAULT_CONFIG, Path::new("gateway.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sessions.len(), 2);
        assert_eq!(c.forward.len(), 1);
    }
}
