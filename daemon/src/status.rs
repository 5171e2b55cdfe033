//! `mqtt-sessions status`: asks a running daemon's `GET /sessions` and prints a table.
//!
//! The client is a [`StatusClient`]: one `awc` client (actix-web's own HTTP client, on the
//! actix-http already in the tree) kept for every request of a run, so the two samples the
//! rates come from share a connection. It speaks `http://` and `https://` (rustls with the
//! system's roots; `SSL_CERT_FILE` names other ones), takes basic-auth credentials from the
//! URL's user info and accepts IPv6 hosts (`http://[::1]:9883`). The table tolerates
//! missing fields (printed as `-`), so it works against older and newer daemons alike.

use std::sync::Arc;
use std::time::Duration;

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
}

/// An HTTP client for one daemon, kept for all the requests of a `status` run.
///
/// Runs on an actix system (`awc` is single-threaded): build and use it inside
/// `actix_rt::System::block_on`.
pub struct StatusClient {
    client: awc::Client,
    /// The base URL without credentials, without a trailing `/`.
    base: String,
    /// Basic-auth user and password from the URL's user info.
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for StatusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusClient")
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "***")))
            .finish_non_exhaustive()
    }
}

impl StatusClient {
    /// A client for the daemon at `base` (`http://host:port`, `https://...`, with an
    /// optional path prefix and `user:password@`).
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
        let auth = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or("")),
            )
        });
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
        })
    }

    /// `GET {base}{path}`: the status code and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), StatusError> {
        let full = format!("{}{path}", self.base);
        let mut request = self
            .client
            .get(&full)
            .insert_header(("Accept", "application/json"));
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password);
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

    /// Fetches `/sessions` as a JSON array.
    pub async fn sessions(&self) -> Result<Vec<Value>, StatusError> {
        let (code, body) = self.get("/sessions").await?;
        let answer = |reason: String| StatusError::Answer {
            url: format!("{}/sessions", self.base),
            reason,
        };
        if code == 401 {
            return Err(answer(
                "HTTP 401: the daemon wants credentials (--url http://user:password@host:port)"
                    .into(),
            ));
        }
        if code != 200 {
            return Err(answer(format!("HTTP {code}")));
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

/// Renders the table. With an earlier sample `before` taken `interval` ago, the rate
/// columns are messages per second over that interval.
pub fn table(rows: &[Value], before: Option<(&[Value], Duration)>) -> String {
    let header = [
        "SESSION",
        "STATE",
        "READY",
        "BROKER",
        "UPTIME",
        "IN/S",
        "OUT/S",
        "LAST ERROR",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for row in rows {
        let name = text(row, "name");
        let earlier = before.and_then(|(prev, dt)| {
            prev.iter()
                .find(|p| text(p, "name") == name)
                .map(|p| (p, dt))
        });
        let rate = |field: &str| match (earlier, lookup(row, field).and_then(Value::as_f64)) {
            (Some((p, dt)), Some(now)) if !dt.is_zero() => lookup(p, field)
                .and_then(Value::as_f64)
                .map(|then| format!("{:.1}", (now - then).max(0.0) / dt.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            _ => "-".into(),
        };
        lines.push(vec![
            name.clone(),
            text(row, "state"),
            row.get("ready")
                .and_then(Value::as_bool)
                .map(|r| if r { "yes" } else { "no" }.to_string())
                .unwrap_or_else(|| "-".into()),
            text(row, "broker"),
            lookup(row, "uptime_seconds")
                .and_then(Value::as_f64)
                .map(uptime)
                .unwrap_or_else(|| "-".into()),
            rate("messages_received"),
            rate("messages_sent"),
            text(row, "last_error"),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
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
        assert_eq!(c.auth, Some(("ops".into(), "p@ss".into())));
        assert!(!format!("{c:?}").contains("p@ss"));
        assert!(matches!(
            StatusClient::new("ftp://127.0.0.1:21"),
            Err(StatusError::Url { .. })
        ));
    }

    #[test]
    fn the_table_tolerates_missing_fields_and_computes_rates() {
        let before: Vec<Value> =
            serde_json::from_str(r#"[{"name":"edge","messages_received":10,"messages_sent":0}]"#)
                .unwrap();
        let now: Vec<Value> = serde_json::from_str(
            r#"[{"name":"edge","state":"connected","ready":true,"broker":"mqtt://h:1883",
                 "uptime_seconds":3725,"messages_received":30,"messages_sent":5,"last_error":null},
                {"name":"bare"}]"#,
        )
        .unwrap();
        let t = table(&now, Some((&before, Duration::from_secs(2))));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SESSION"), "{t}");
        assert!(
            lines[1].contains("connected") && lines[1].contains("1h02m"),
            "{t}"
        );
        assert!(lines[1].contains("10.0") && lines[1].contains("2.5"), "{t}");
        assert!(lines[2].starts_with("bare"), "{t}");
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
        let t = table(&rows, None);
        let col = |line: &str| {
            let at = line.find("connected").unwrap();
            display_width(&line[..at])
        };
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(col(lines[0]), col(lines[1]), "{t}");
    }
}
