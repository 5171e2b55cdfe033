//! Who may read the endpoints: HTTP basic auth checked against bcrypt hashes (the
//! Prometheus exporter-toolkit convention: `basic_auth_users = { name = "$2y$..." }`) or a
//! bearer token. [`Authorized`] is the extractor every protected handler takes.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;

use super::error::HttpError;
use super::State;
use crate::credentials::Secret;

/// Successful basic-auth checks remembered, so that a page polling every two seconds does
/// not pay a bcrypt verification (tens of milliseconds of CPU) per request. Bounded: the
/// set is cleared when full.
const VERIFIED_CACHE: usize = 256;

/// The credentials the endpoints accept; empty: no authentication.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    /// User name → bcrypt hash.
    users: BTreeMap<String, String>,
    /// The bearer token.
    bearer: Option<Secret>,
    /// Keyed hashes of `user:password` pairs that verified (never the passwords).
    verified: Arc<Mutex<HashSet<u64>>>,
    hasher: RandomState,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("bearer", &self.bearer.is_some())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Adds a basic-auth user; `hash` must be a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    pub(crate) fn add_user(&mut self, name: &str, hash: &str) -> Result<(), HttpError> {
        if name.is_empty() || name.contains(':') {
            return Err(HttpError::BadUser {
                user: name.to_string(),
            });
        }
        // bcrypt's error repeats the value, which may be a password pasted by mistake:
        // say what is expected instead.
        hash.parse::<bcrypt::HashParts>()
            .map_err(|_| HttpError::BadHash {
                user: name.to_string(),
                reason: "expected $2a$, $2b$, $2x$ or $2y$, a two-digit cost and 53 characters of salt and hash".to_string(),
            })?;
        self.users.insert(name.to_string(), hash.to_string());
        Ok(())
    }

    /// Sets the bearer token.
    pub(crate) fn set_bearer(&mut self, token: Secret) {
        self.bearer = Some(token);
    }

    /// No credentials are configured: everything is open.
    pub(crate) fn is_open(&self) -> bool {
        self.users.is_empty() && self.bearer.is_none()
    }

    /// Whether an `Authorization` header value grants access (runs bcrypt: call it off
    /// the worker thread).
    fn check(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .bearer
                .as_ref()
                .is_some_and(|t| constant_time_eq(t.expose().as_bytes(), rest.as_bytes()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Some((user, password)) = decode_basic(rest) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            // Spend the same time as a real check, so that user names cannot be probed.
            let _ = bcrypt::verify(&password, DUMMY_HASH);
            return false;
        };
        let key = self.hasher.hash_one((&user, &password, hash));
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() >= VERIFIED_CACHE {
                v.clear();
            }
            v.insert(key);
        }
        ok
    }

    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self) -> &'static str {
        if self.users.is_empty() {
            "Bearer"
        } else {
            "Basic realm=\"mqtt-sessions\", charset=\"UTF-8\""
        }
    }
}

/// A bcrypt hash of an unguessable string, verified against for unknown users.
const DUMMY_HASH: &str = "$2b$10$CwTycUXWue0Thq9StjUM0uJ8.QXjyx0cB8kRAeqzO3b6pNQDcfNuy";

/// Equal, in a time that depends on the lengths only (a token cannot be guessed byte by
/// byte from response times).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// `user:password` from the base64 of a basic `Authorization` header.
fn decode_basic(b64: &str) -> Option<(String, String)> {
    let raw = base64_decode(b64)?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64, with or without padding; `None` when it is not base64.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// Marks a resource as open (no credentials needed) even when authentication is on
/// (`open_paths`, e.g. `/healthz` for probes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Open;

/// Proof that the request may read the endpoint: its credentials were accepted, no
/// credentials are configured, or the resource is open.
#[derive(Debug)]
pub(crate) struct Authorized;

/// A request without acceptable credentials: `401` with a challenge.
#[derive(Debug, thiserror::Error)]
#[error("unauthorized")]
pub(crate) struct Unauthorized(&'static str);

impl ResponseError for Unauthorized {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, self.0))
            .content_type("text/plain; charset=utf-8")
            .body("unauthorized\n")
    }
}

impl FromRequest for Authorized {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<State>>().cloned();
        let open = req.app_data::<Open>().is_some();
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            let Some(state) = state else {
                return Ok(Authorized);
            };
            let auth = &state.auth;
            if open || auth.is_open() {
                return Ok(Authorized);
            }
            let checker = auth.clone();
            let ok = web::block(move || checker.check(header.as_deref()))
                .await
                .unwrap_or(false);
            if ok {
                Ok(Authorized)
            } else {
                state.stats.auth_failure();
                Err(Unauthorized(auth.challenge()).into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        let table = [
            ("dXNlcjpwYXNz", Some("user:pass")),
            ("YQ==", Some("a")),
            ("YQ", Some("a")),
            ("YWI=", Some("ab")),
            ("", Some("")),
            ("!!", None),
        ];
        for (input, want) in table {
            let got = base64_decode(input).map(|v| String::from_utf8(v).unwrap_or_default());
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }

    #[test]
    fn basic_and_bearer_credentials_are_checked() {
        let mut auth = Auth::default();
        let hash = bcrypt::hash("s3cret", 4).unwrap_or_default();
        assert!(auth.add_user("alice", &hash).is_ok());
        auth.set_bearer(Secret::new("tok"));
        let table = [
            (None, false),
            (Some("Basic YWxpY2U6czNjcmV0"), true), // alice:s3cret
            (Some("Basic YWxpY2U6czNjcmV0"), true), // cached
            (Some("Basic YWxpY2U6d3Jvbmc="), false), // alice:wrong
            (Some("Basic Ym9iOnMzY3JldA=="), false), // bob:s3cret
            (Some("Bearer tok"), true),
            (Some("bearer tok"), true),
            (Some("Bearer tok2"), false),
            (Some("Digest x"), false),
        ];
        for (header, want) in table {
            assert_eq!(auth.check(header), want, "{header:?}");
        }
    }

    #[test]
    fn a_bad_hash_or_user_name_is_refused() {
        let mut auth = Auth::default();
        assert!(matches!(
            auth.add_user("alice", "plaintext"),
            Err(HttpError::BadHash { .. })
        ));
        assert!(matches!(
            auth.add_user(
                "a:b",
                "$2b$10$CwTycUXWue0Thq9StjUM0uJ8.QXjyx0cB8kRAeqzO3b6pNQDcfNuy"
            ),
            Err(HttpError::BadUser { .. })
        ));
        assert!(auth.is_open());
    }
}
