//! `mqtt-sessions status`: asks a running daemon's `GET /sessions` and `GET /rules` once
//! each and prints tables (or, with `--json`, both answers as one JSON object).
//!
//! The client is a [`StatusClient`]: one `awc` client (actix-web's own HTTP client, on the
//! actix-http already in the tree) kept for every request of a run. It speaks `http://`
//! and `https://` (rustls with the system's roots; `SSL_CERT_FILE` names other ones) and
//! accepts IPv6 hosts (`http://[::1]:9883`). It authenticates the way the daemon's
//! `[http]` section asks: a bearer token or a basic-auth password, each read from a file or
//! an environment variable ([`SecretSource`]) so that it never shows in the process list;
//! `user:password@` in the URL still works (the CLI warns about it). The message rates are
//! the daemon's own (sampled every second), so one fetch is enough. The tables tolerate
//! missing fields (printed as `-`), so they work against older and newer daemons alike.

use std::sync::Arc;
use std::time::Duration;

use mqtt_sessions::Secret;
use serde_json::Value;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The URL is not an `http://host:port` URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting, sending or reading failed.
    #[error("cannot reach {url}: {reason}")]
    Io {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The answer was not an HTTP 200 with a JSON array.
    #[error("unexpected answer from {url}: {reason}")]
    Answer {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A token or password could not be read from where it was said to be.
    #[error("cannot read the {what} from {source_name}: {reason}")]
    Secret {
        /// `bearer token` or `password`.
        what: &'static str,
        /// The file or environment variable.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// Where a token or password comes from: never the command line itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file: its first line (a trailing newline and surrounding blanks are ignored).
    File(std::path::PathBuf),
    /// An environment variable.
    Env(String),
}

impl SecretSource {
    /// Reads the secret; `what` names it in the error (`bearer token`, `password`). An
    /// empty secret is an error.
    pub fn read(&self, what: &'static str) -> Result<Secret, StatusError> {
        let fail = |source_name: String, reason: String| StatusError::Secret {
            what,
            source_name,
            reason,
        };
        let value = match self {
            SecretSource::File(path) => {
                let name = format!("file {}", path.display());
                let text =
                    std::fs::read_to_string(path).map_err(|e| fail(name.clone(), e.to_string()))?;
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    return Err(fail(name, "the file is empty".into()));
                }
                line
            }
            SecretSource::Env(var) => {
                let name = format!("environment variable {var}");
                let value = std::env::var(var).map_err(|e| fail(name.clone(), e.to_string()))?;
                if value.is_empty() {
                    return Err(fail(name, "the variable is empty".into()));
                }
                value
            }
        };
        Ok(Secret::new(value))
    }
}

/// How the client authenticates.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum HttpAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::None => f.write_str("None"),
            HttpAuth::Bearer(_) => f.write_str("Bearer(***)"),
            HttpAuth::Basic { user, .. } => write!(f, "Basic({user}:***)"),
        }
    }
}

/// One fetch of a daemon: its sessions and its forwarding rules, as JSON rows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// `GET /sessions`.
    pub sessions: Vec<Value>,
    /// `GET /rules` (empty from a daemon without the endpoint).
    pub rules: Vec<Value>,
}

/// An HTTP client for one daemon, kept for all the requests of a `status` run.
///
/// Runs on an actix system (`awc` is single-threaded): build and use it inside
/// `actix_rt::System::block_on`.
pub struct StatusClient {
    client: awc::Client,
    /// The base URL without credentials, without a trailing `/`.
    base: String,
    /// The credentials sent with every request.
    auth: HttpAuth,
    /// The URL carried credentials (`user:password@`).
    url_credentials: bool,
}

impl std::fmt::Debug for StatusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl StatusClient {
    /// A client for the daemon at `base` (`http://host:port`, `https://...`, with an
    /// optional path prefix and `user:password@`, used for basic auth unless
    /// [`with_auth`](Self::with_auth) says otherwise).
    pub fn new(base: &str) -> Result<Self, StatusError> {
        let url_err = |reason: &str| StatusError::Url {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let mut url = url::Url::parse(base).map_err(|e| url_err(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(url_err("only http:// and https:// are supported"));
        }
        if url.host().is_none() {
            return Err(url_err("no host"));
        }
        // Basic auth from the URL's user info (`http://user:password@host:port`).
        let url_credentials = !url.username().is_empty();
        let auth = if url_credentials {
            HttpAuth::Basic {
                user: percent_decode(url.username()),
                password: Secret::new(percent_decode(url.password().unwrap_or(""))),
            }
        } else {
            HttpAuth::None
        };
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let mut connector = awc::Connector::new().timeout(TIMEOUT);
        if url.scheme() == "https" {
            connector = connector.rustls_0_23(tls_config());
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(TIMEOUT)
            .finish();
        Ok(StatusClient {
            client,
            base: url.as_str().trim_end_matches('/').to_string(),
            auth,
            url_credentials,
        })
    }

    /// Authenticates with `auth` instead (credentials of the URL, if any, are dropped).
    pub fn with_auth(mut self, auth: HttpAuth) -> Self {
        if auth != HttpAuth::None {
            self.auth = auth;
        }
        self
    }

    /// The URL carried `user:password@` (a password in the process list: worth a warning).
    pub fn credentials_in_url(&self) -> bool {
        self.url_credentials
    }

    /// `GET {base}{path}`: the status code and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), StatusError> {
        let full = format!("{}{path}", self.base);
        let mut request = self
            .client
            .get(&full)
            .insert_header(("Accept", "application/json"));
        match &self.auth {
            HttpAuth::None => {}
            HttpAuth::Bearer(token) => request = request.bearer_auth(token.expose()),
            HttpAuth::Basic { user, password } => {
                request = request.basic_auth(user, password.expose());
            }
        }
        let io = |reason: String| StatusError::Io {
            url: full.clone(),
            reason,
        };
        let mut response = request.send().await.map_err(|e| io(e.to_string()))?;
        let body = response
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| io(e.to_string()))?;
        Ok((
            response.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    /// Fetches `/sessions` and `/rules`, once each.
    pub async fn snapshot(&self) -> Result<Snapshot, StatusError> {
        let sessions = self.array("/sessions", false).await?;
        let rules = self.array("/rules", true).await?;
        Ok(Snapshot { sessions, rules })
    }

    /// Fetches `path` as a JSON array (`missing_ok`: a 404 is an empty one).
    async fn array(&self, path: &str, missing_ok: bool) -> Result<Vec<Value>, StatusError> {
        let (code, body) = self.get(path).await?;
        let answer = |reason: String| StatusError::Answer {
            url: format!("{}{path}", self.base),
            reason,
        };
        match code {
            200 => {}
            404 if missing_ok => return Ok(Vec::new()),
            401 => {
                return Err(answer(
                    "HTTP 401: the daemon wants credentials (--token-file/--token-env, or \
                     --user with --password-file/--password-env)"
                        .into(),
                ))
            }
            code => return Err(answer(format!("HTTP {code}"))),
        }
        match serde_json::from_str(&body) {
            Ok(Value::Array(rows)) => Ok(rows),
            Ok(_) => Err(answer("not a JSON array".into())),
            Err(e) => Err(answer(format!("invalid JSON: {e}"))),
        }
    }
}

/// rustls (ring) trusting the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set).
fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // ring supports the default protocol versions; kept total rather than panicking.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    Arc::new(config)
}

/// `%XX` escapes of a URL's user info decoded (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The base URL of the daemon configured in `config` (its `[http]` address, `https`
/// with `[http.tls]`), or `http://127.0.0.1:9883` when the file cannot be read or has no
/// `[http]`.
pub fn default_url(config: &std::path::Path) -> String {
    match super::Config::load(config) {
        Ok(c) => match c.http {
            Some(h) => {
                let scheme = if h.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", h.listen)
            }
            None => "http://127.0.0.1:9883".into(),
        },
        Err(_) => "http://127.0.0.1:9883".into(),
    }
}

/// One column of a table: its header and how a JSON row fills its cell.
type Column = (&'static str, fn(&Value) -> String);

/// The columns of the sessions table.
const SESSION_COLUMNS: &[Column] = &[
    ("SESSION", |r| text(r, "name")),
    ("STATE", |r| text(r, "state")),
    ("READY", |r| {
        r.get("ready")
            .and_then(Value::as_bool)
            .map(|r| if r { "yes" } else { "no" }.to_string())
            .unwrap_or_else(|| "-".into())
    }),
    ("BROKER", |r| text(r, "broker")),
    ("UPTIME", |r| {
        lookup(r, "uptime_seconds")
            .and_then(Value::as_f64)
            .map(uptime)
            .unwrap_or_else(|| "-".into())
    }),
    ("IN/S", |r| rate(r, "messages_received_per_second")),
    ("OUT/S", |r| rate(r, "messages_sent_per_second")),
    ("QUEUED", |r| number(r, "pending_messages")),
    ("LAST ERROR", |r| text(r, "last_error")),
];

/// The columns of the forwarding rules table (rows of `GET /rules`).
const RULE_COLUMNS: &[Column] = &[
    ("RULE", |r| text(r, "name")),
    ("FROM", |r| text(r, "from")),
    ("FILTER", |r| text(r, "filter")),
    ("TO", |r| text(r, "to")),
    ("FORWARDED", |r| number(r, "forwarded")),
    ("RETRIES", |r| number(r, "retries")),
    ("DROPPED", |r| number(r, "dropped")),
    ("IN FLIGHT", |r| number(r, "in_flight")),
    ("WAITING", |r| number(r, "waiting")),
    ("OLDEST", |r| {
        lookup(r, "oldest_age_ms")
            .and_then(Value::as_u64)
            .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
    }),
];

/// Renders the sessions table, then the rules table when the daemon has rules.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = table(SESSION_COLUMNS, &snapshot.sessions);
    if !snapshot.rules.is_empty() {
        out.push('\n');
        out.push_str(&table(RULE_COLUMNS, &snapshot.rules));
    }
    out
}

/// The snapshot as one JSON object, `{"sessions": [...], "rules": [...]}`, the rows as the
/// daemon sent them.
pub fn json(snapshot: &Snapshot) -> String {
    let mut text = serde_json::to_string_pretty(snapshot).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// A table of `rows` in `columns`, aligned (wide characters count two columns).
fn table(columns: &[Column], rows: &[Value]) -> String {
    let mut lines: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| h.to_string()).collect()];
    lines.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, cell)| cell(row)).collect()),
    );
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| display_width(&l[i]))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - display_width(c))))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A per-second rate of a row (top level or `metrics`), one decimal; `-` when missing.
fn rate(row: &Value, field: &str) -> String {
    lookup(row, field)
        .and_then(Value::as_f64)
        .map(|v| format!("{v:.1}"))
        .unwrap_or_else(|| "-".into())
}

/// A number of a row (top level or `metrics`); `-` when missing.
fn number(row: &Value, field: &str) -> String {
    lookup(row, field)
        .filter(|v| v.is_number())
        .map(Value::to_string)
        .unwrap_or_else(|| "-".into())
}

/// Columns a terminal gives `s` (two for East Asian wide and fullwidth characters such
/// as "生产设备", none for combining marks), as `unicode-width` reckons them.
fn display_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// A field of a `/sessions` row: at its top level or among its `metrics`.
fn lookup<'a>(row: &'a Value, field: &str) -> Option<&'a Value> {
    row.get(field)
        .or_else(|| row.get("metrics").and_then(|m| m.get(field)))
}

/// A field as display text: strings as they are, other values as JSON, missing as `-`.
fn text(row: &Value, field: &str) -> String {
    match row.get(field) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
        Some(v) => v.to_string(),
    }
}

fn uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_of_the_url_are_decoded_and_kept_out_of_the_base() {
        assert_eq!(percent_decode("p%40ss%3Aw%zz"), "p@ss:w%zz");
        let c = StatusClient::new("http://ops:p%40ss@[::1]:9883/prefix/").unwrap();
        assert_eq!(c.base, "http://[::1]:9883/prefix");
        assert_eq!(
            c.auth,
            HttpAuth::Basic {
                user: "ops".into(),
                password: Secret::new("p@ss")
            }
        );
        assert!(c.credentials_in_url());
        assert!(!format!("{c:?}").contains("p@ss"));
        // Credentials given otherwise replace those of the URL.
        let c = c.with_auth(HttpAuth::Bearer(Secret::new("t0k")));
        assert_eq!(c.auth, HttpAuth::Bearer(Secret::new("t0k")));
        assert!(!format!("{c:?}").contains("t0k"));
        assert!(matches!(
            StatusClient::new("ftp://127.0.0.1:21"),
            Err(StatusError::Url { .. })
        ));
    }

    #[test]
    fn secrets_come_from_the_first_line_of_a_file_or_a_variable_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  abc123 \nsecond line\n").unwrap();
        let token = SecretSource::File(file.clone())
            .read("bearer token")
            .unwrap();
        assert_eq!(token.expose(), "abc123");
        std::fs::write(&file, "\n").unwrap();
        let err = SecretSource::File(file).read("bearer token").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = SecretSource::File(dir.path().join("missing"))
            .read("password")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the password from file"),
            "{err}"
        );
        let err = SecretSource::Env("MQTT_SESSIONS_TEST_UNSET_VARIABLE".into())
            .read("password")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("MQTT_SESSIONS_TEST_UNSET_VARIABLE"),
            "{err}"
        );
    }

    #[test]
    fn the_tables_tolerate_missing_fields_and_show_the_daemons_rates() {
        let snapshot = Snapshot {
            sessions: serde_json::from_str(
                r#"[{"name":"edge","state":"connected","ready":true,"broker":"mqtt://h:1883",
                     "last_error":null,"metrics":{"uptime_seconds":3725,
                     "messages_received_per_second":10,"messages_sent_per_second":2.5,
                     "pending_messages":7}},
                    {"name":"bare"}]"#,
            )
            .unwrap(),
            rules: serde_json::from_str(
                r#"[{"name":"up","from":"edge","filter":"in/#","to":"cloud","forwarded":42,
                     "retries":1,"dropped":0}]"#,
            )
            .unwrap(),
        };
        let t = render(&snapshot);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SESSION"), "{t}");
        assert!(
            lines[1].contains("connected") && lines[1].contains("1h02m"),
            "{t}"
        );
        assert!(lines[1].contains("10.0") && lines[1].contains("2.5"), "{t}");
        assert!(lines[1].contains(" 7 "), "{t}");
        assert!(lines[2].starts_with("bare"), "{t}");
        assert_eq!(lines[3], "", "{t}");
        assert!(
            lines[4].starts_with("RULE") && lines[4].contains("FORWARDED"),
            "{t}"
        );
        assert!(lines[5].starts_with("up") && lines[5].contains("42"), "{t}");
        // Without rules: the sessions table only.
        let no_rules = Snapshot {
            rules: Vec::new(),
            ..snapshot.clone()
        };
        assert!(!render(&no_rules).contains("RULE"));
        // JSON: both answers as they came.
        let j: Value = serde_json::from_str(&json(&snapshot)).unwrap();
        assert_eq!(j["sessions"][0]["name"], "edge");
        assert_eq!(j["rules"][0]["forwarded"], 42);
    }

    #[test]
    fn wide_session_names_keep_the_columns_aligned() {
        assert_eq!(display_width("生产设备"), 8);
        assert_eq!(display_width("edge"), 4);
        let rows: Vec<Value> = serde_json::from_str(
            r#"[{"name":"生产设备","state":"connected","broker":"b"},
                {"name":"edge","state":"connected","broker":"b"}]"#,
        )
        .unwrap();
        let t = table(SESSION_COLUMNS, &rows);
        let col = |line: &str| {
            let at = line.find("connected").unwrap();
            display_width(&line[..at])
        };
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(col(lines[0]), col(lines[1]), "{t}");
    }
}
