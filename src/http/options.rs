//! [`HttpOptions`]: TLS, credentials, open paths and extra sources of the endpoints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::auth::Auth;
use super::error::HttpError;
use crate::credentials::Secret;

/// Events a `GET /events` client may have waiting before it counts as too slow and is
/// disconnected (unless set with [`HttpOptions::sse_buffer`]).
pub const DEFAULT_SSE_BUFFER: usize = 256;

/// One forwarding rule as `GET /rules` reports it (the daemon's `[[forward]]` rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuleInfo {
    /// The rule's name.
    pub name: String,
    /// The session messages come from.
    pub from: String,
    /// The topic filter on `from`.
    pub filter: String,
    /// The session messages are published through.
    pub to: String,
    /// Messages published to the target (acknowledged for QoS >= 1).
    pub forwarded: u64,
    /// Target publishes that failed and were retried.
    pub retries: u64,
    /// Messages given up on.
    pub dropped: u64,
    /// Messages taken from the source and not yet handled by the target (the window in
    /// use).
    pub in_flight: u64,
    /// Messages the target session accepted that its broker has not acknowledged yet.
    pub waiting: u64,
    /// Age of the oldest message not yet acknowledged by the target's broker, in
    /// milliseconds (0 when there is none).
    pub oldest_age_ms: u64,
    /// The most messages that were ever in flight at once.
    pub in_flight_peak: u64,
    /// Messages not forwarded because they had been on the target's broker already
    /// (loop prevention).
    pub looped: u64,
}

impl RuleInfo {
    /// A rule's report.
    pub fn new(
        name: impl Into<String>,
        from: impl Into<String>,
        filter: impl Into<String>,
        to: impl Into<String>,
        counts: [u64; 3],
    ) -> Self {
        RuleInfo {
            name: name.into(),
            from: from.into(),
            filter: filter.into(),
            to: to.into(),
            forwarded: counts[0],
            retries: counts[1],
            dropped: counts[2],
            in_flight: 0,
            waiting: 0,
            oldest_age_ms: 0,
            in_flight_peak: 0,
            looped: 0,
        }
    }

    /// The rule's backlog: messages in flight, waiting for the target's broker, and the
    /// age of the oldest of them.
    pub fn backlog(
        mut self,
        in_flight: u64,
        waiting: u64,
        oldest_age: std::time::Duration,
    ) -> Self {
        self.in_flight = in_flight;
        self.waiting = waiting;
        self.oldest_age_ms = u64::try_from(oldest_age.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The most messages ever in flight at once, and the messages not forwarded because
    /// of a loop.
    pub fn peaks(mut self, in_flight_peak: u64, looped: u64) -> Self {
        self.in_flight_peak = in_flight_peak;
        self.looped = looped;
        self
    }
}

/// Where `GET /rules` reads forwarding rules from (the daemon sets one; without it the
/// list is empty and the status page hides the section). Called on every request; it
/// should read counters, not wait for an actor.
pub trait RulesSource: Send + Sync + 'static {
    /// Every current rule.
    fn rules(&self) -> Vec<RuleInfo>;
}

impl<F> RulesSource for F
where
    F: Fn() -> Vec<RuleInfo> + Send + Sync + 'static,
{
    fn rules(&self) -> Vec<RuleInfo> {
        self()
    }
}

/// How the endpoints are served: TLS, credentials, paths left open, the `/rules` source
/// and the event stream's per-client buffer. The default serves plain HTTP to anyone
/// (bind it to loopback).
///
/// ```no_run
/// use mqtt_sessions::http::HttpOptions;
///
/// # fn f() -> Result<(), mqtt_sessions::http::HttpError> {
/// let options = HttpOptions::new()
///     .tls("/etc/mqtt-sessions/tls.crt", "/etc/mqtt-sessions/tls.key")
///     .basic_auth_user("prometheus", "$2y$10$...")?
///     .open_path("/healthz")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpOptions {
    pub(crate) auth: Auth,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) open_paths: BTreeSet<String>,
    pub(crate) rules: Option<Arc<dyn RulesSource>>,
    pub(crate) required: Option<RequiredForReady>,
    pub(crate) sse_buffer: usize,
    /// Set by [`serve_with`](super::serve_with): turns true when the server stops.
    pub(crate) closing: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            auth: Auth::default(),
            tls: None,
            open_paths: BTreeSet::new(),
            rules: None,
            required: None,
            sse_buffer: DEFAULT_SSE_BUFFER,
            closing: None,
        }
    }
}

/// Which sessions `/readyz` waits for: true for a session name that must be ready.
pub type RequiredForReady = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("open_paths", &self.open_paths)
            .field("rules", &self.rules.is_some())
            .field("sse_buffer", &self.sse_buffer)
            .finish()
    }
}

impl HttpOptions {
    /// Plain HTTP, no credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves over TLS with a PEM certificate chain and private key (read when the server
    /// starts, or by [`check_tls`](Self::check_tls)).
    pub fn tls(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Accepts HTTP basic auth for `user` whose password has this bcrypt hash
    /// (`htpasswd -nbBC 10 user password`, from Debian's `apache2-utils`).
    pub fn basic_auth_user(mut self, user: &str, bcrypt_hash: &str) -> Result<Self, HttpError> {
        self.auth.add_user(user, bcrypt_hash)?;
        Ok(self)
    }

    /// Accepts `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: Secret) -> Self {
        self.auth.set_bearer(token);
        self
    }

    /// Reads the bearer token from a file (one line; surrounding whitespace is ignored).
    pub fn bearer_token_file(self, file: &Path) -> Result<Self, HttpError> {
        let err = |reason: String| HttpError::TokenFile {
            file: file.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(self.bearer_token(Secret::new(token)))
    }

    /// Leaves `path` open to requests without credentials: one of the endpoints' own
    /// paths (`/healthz`, `/readyz`, `/metrics`, ...), relative to where they are mounted
    /// (`/healthz` is `/ops/healthz` under `web::scope("/ops")`).
    pub fn open_path(mut self, path: &str) -> Result<Self, HttpError> {
        if !path.starts_with('/') {
            return Err(HttpError::BadOpenPath(path.to_string()));
        }
        self.open_paths.insert(path.to_string());
        Ok(self)
    }

    /// Where `GET /rules` reads forwarding rules from.
    pub fn rules_source(mut self, source: Arc<dyn RulesSource>) -> Self {
        self.rules = Some(source);
        self
    }

    /// Which sessions `GET /readyz` waits for (default: all): the others are neither
    /// waited for nor listed. Asked on every request, so it may change at run time.
    pub fn required_for_ready(mut self, required: RequiredForReady) -> Self {
        self.required = Some(required);
        self
    }

    /// Events a `GET /events` client may have waiting before it is disconnected as too
    /// slow. Default [`DEFAULT_SSE_BUFFER`]; at least 1.
    pub fn sse_buffer(mut self, events: usize) -> Self {
        self.sse_buffer = events.max(1);
        self
    }

    /// Whether any credentials are required.
    pub fn requires_auth(&self) -> bool {
        !self.auth.is_open()
    }

    /// Whether the endpoints are served over TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the TLS files and builds the server configuration (`None` without TLS).
    pub fn check_tls(&self) -> Result<Option<rustls::ServerConfig>, HttpError> {
        self.tls
            .as_ref()
            .map(|(cert, key)| server_config(cert, key))
            .transpose()
    }
}

/// A rustls server configuration (ring provider) from PEM files.
fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, HttpError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_err = |reason: String| HttpError::TlsFile {
        what: "certificate",
        file: cert_file.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| HttpError::TlsFile {
        what: "private key",
        file: key_file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(HttpError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_tls_files_are_typed_errors() {
        let dir = std::env::temp_dir().join(format!("mqtt-sessions-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let empty = dir.join("empty.pem");
        let _ = std::fs::write(&empty, "");
        let missing = dir.join("missing.pem");
        let o = HttpOptions::new().tls(&missing, &missing);
        assert!(matches!(
            o.check_tls(),
            Err(HttpError::TlsFile {
                what: "certificate",
                ..
            })
        ));
        let o = HttpOptions::new().tls(&empty, &empty);
        assert!(matches!(
            o.check_tls(),
            Err(HttpError::TlsFile {
                what: "certificate",
                ..
            })
        ));
        assert!(matches!(HttpOptions::new().check_tls(), Ok(None)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_paths_start_with_a_slash() {
        assert!(HttpOptions::new().open_path("healthz").is_err());
        assert!(HttpOptions::new().open_path("/healthz").is_ok());
    }
}
