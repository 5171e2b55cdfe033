//! [`ConfigError`]: why a configuration file was refused, and where.

use std::path::PathBuf;

use mqtt_sessions::options::OptionsError;
use mqtt_sessions::topic::TopicError;

/// A configuration file was refused: where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {reason}", file.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Line and column (from 1), when the reason points at one place.
    pub location: Option<(usize, usize)>,
    /// Why.
    #[source]
    pub reason: Box<ConfigErrorKind>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// Not TOML, or not the expected fields and types.
    #[error("{0}")]
    Syntax(String),
    /// Two sessions of one name.
    #[error("session {0:?} is defined twice")]
    DuplicateSession(String),
    /// Two forwarding rules of one name.
    #[error("forward rule {0:?} is defined twice")]
    DuplicateRule(String),
    /// A rule's targets are missing, ambiguous or repeated.
    #[error("forward rule {rule:?}: {reason}")]
    Targets {
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A rule names a session that is not defined.
    #[error("forward rule {rule:?}: no session named {session:?}")]
    UnknownSession {
        /// The rule.
        rule: String,
        /// The missing session.
        session: String,
    },
    /// A bad topic filter.
    #[error("{context}: invalid topic filter {filter:?}: {source}")]
    Filter {
        /// Where it was (`session "edge", subscription`).
        context: String,
        /// The filter.
        filter: String,
        /// The rule it breaks.
        source: TopicError,
    },
    /// A bad output topic template.
    #[error("forward rule {rule:?}: invalid topic template {template:?}: {reason}")]
    Template {
        /// The rule.
        rule: String,
        /// The template.
        template: String,
        /// Why.
        reason: String,
    },
    /// A rule whose output would come back to its own input.
    #[error("forward rule {rule:?} would loop: sessions {from:?} and {to:?} share broker {broker} and the output topic {template:?} can match the rule's own filter {filter:?}")]
    Loop {
        /// The rule.
        rule: String,
        /// Its source session.
        from: String,
        /// Its target session.
        to: String,
        /// A broker both use.
        broker: String,
        /// The filter.
        filter: String,
        /// The template.
        template: String,
    },
    /// A bad `link_state_topic`.
    #[error("session {session:?}: link_state_topic: {reason}")]
    LinkState {
        /// The session.
        session: String,
        /// Why.
        reason: String,
    },
    /// Rules that feed each other in a circle over shared brokers.
    #[error("forward rules loop: {}; each rule's output can match the next rule's filter on a broker they share (MQTT 5 sessions mark forwarded messages and stop a loop across daemons, but one configuration must not contain a circle)", path.join(" -> "))]
    RuleCycle {
        /// The rules of the circle, the first repeated at the end.
        path: Vec<String>,
    },
    /// More than one of `password`, `password_file`, `password_env`.
    #[error("session {0:?}: give only one of password, password_file and password_env")]
    PasswordSources(String),
    /// The password file could not be read.
    #[error("session {session:?}: cannot read password_file {file:?}: {source}")]
    PasswordFile {
        /// The session.
        session: String,
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The password variable is not set.
    #[error("session {session:?}: password_env {var:?} is not set (or not valid UTF-8)")]
    PasswordEnv {
        /// The session.
        session: String,
        /// The variable.
        var: String,
    },
    /// Session options refused by the library.
    #[error(transparent)]
    Session(#[from] OptionsError),
    /// Two sessions with one explicit client id on a shared broker.
    #[error("sessions {first:?} and {second:?} both use client id {client_id:?} on broker {broker}: they would keep disconnecting each other")]
    DuplicateClientId {
        /// The first session.
        first: String,
        /// The second one.
        second: String,
        /// The client id.
        client_id: String,
        /// The shared broker.
        broker: String,
    },
    /// A bad `[http]` section: an unreadable TLS file, a password that is not a bcrypt
    /// hash, an unreadable token file.
    #[error("http: {0}")]
    Http(#[source] mqtt_sessions::http::HttpError),
    /// `[embedded_broker] listen` beyond loopback without `allow_remote = true`.
    #[error("[embedded_broker] listen = \"{0}\" is not a loopback address and the embedded broker has no authentication or TLS: anyone who reaches it could publish and subscribe; listen on 127.0.0.1, or set allow_remote = true to accept that")]
    EmbeddedBrokerRemote(std::net::SocketAddr),
    /// A bad `[store]` section.
    #[error("store: {0}")]
    Store(String),
    /// A `${NAME}` in the file names an environment variable that is not set.
    #[error(
        "environment variable ${{{0}}} is not set (write $${{...}} for a literal \"${{...}}\")"
    )]
    EnvVar(String),
    /// The effective configuration could not be written out.
    #[error("cannot print the effective configuration: {0}")]
    Print(String),
}
