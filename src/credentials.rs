//! Credentials supplied afresh for every connection attempt: short-lived tokens, passwords
//! rotated by a vault, anything that must not be fixed once in [`SessionOptions`](crate::SessionOptions).
//!
//! A [`CredentialsProvider`] set with
//! [`SessionOptions::credentials_provider`](crate::SessionOptions::credentials_provider) is
//! called before each CONNECT the session sends (the first connect, every reconnect, every
//! fallback broker), on a blocking thread of the runtime and bounded by
//! `connect.connect_timeout`: never on the message path. Its user name and password
//! replace the session's `username` and `password` for that CONNECT. When it fails (or
//! takes too long) the attempt fails like any other, as a
//! [`ConnectionFailure`](crate::ConnectionFailure) of kind
//! [`ErrorKind::Credentials`](crate::ErrorKind::Credentials) — in the session's events,
//! its status and `connection_errors_total{kind="credentials"}` — and the session retries
//! with its usual backoff.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mqtt_sessions::{Credentials, CredentialsError, SessionOptions};
//!
//! // Whatever holds the current token (refreshed elsewhere, e.g. by a background task).
//! let token = Arc::new(Mutex::new(String::from("token-1")));
//! let current = Arc::clone(&token);
//! let opts = SessionOptions::new("edge", "mqtt://127.0.0.1:1883").credentials_provider(
//!     move || {
//!         let token = current.lock().map_err(|_| CredentialsError::new("token lock poisoned"))?;
//!         Ok(Credentials::new("edge-device", token.as_str()))
//!     },
//! );
//! opts.validate().unwrap();
//! // The next connect attempt sends the new token.
//! *token.lock().unwrap() = "token-2".into();
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A user name and password for one CONNECT, as a [`CredentialsProvider`] supplies them.
/// `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token); may be empty.
    pub password: Secret,
}

impl Credentials {
    /// A user name and its password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// Why a [`CredentialsProvider`] supplied no credentials (one line, reported in the
/// connection failure; keep secrets out of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

impl CredentialsError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        CredentialsError(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// The function behind a [`CredentialsProvider`].
type ProviderFn = dyn Fn() -> Result<Credentials, CredentialsError> + Send + Sync;

/// Supplies the user name and password of every connection attempt; cheap to clone (one
/// shared function). Not serialised (options read from a file have none); `Debug` prints
/// no secret. Two providers are equal only when they are clones of one another.
#[derive(Clone)]
pub struct CredentialsProvider(Arc<ProviderFn>);

impl CredentialsProvider {
    /// A provider calling `f` for every connection attempt. `f` may block (read a file,
    /// ask a token service): it runs on a blocking thread, and an attempt waits for it at
    /// most `connect.connect_timeout`.
    pub fn new(
        f: impl Fn() -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> Self {
        CredentialsProvider(Arc::new(f))
    }

    /// Calls the provider once, on the calling thread.
    pub fn get(&self) -> Result<Credentials, CredentialsError> {
        (self.0)()
    }
}

impl fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialsProvider(..)")
    }
}

impl PartialEq for CredentialsProvider {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A password or other secret: never printed by `Debug` or `Display`, never serialised.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is really needed (the CONNECT packet).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret_and_equality_is_identity() {
        let p = CredentialsProvider::new(|| Ok(Credentials::new("u", "t0ken")));
        let c = p.get().unwrap();
        assert_eq!(c.password.expose(), "t0ken");
        assert!(!format!("{c:?} {p:?}").contains("t0ken"));
        assert_eq!(p, p.clone());
        let q = CredentialsProvider::new(|| Ok(Credentials::new("u", "t0ken")));
        assert_ne!(p, q);
    }
}
