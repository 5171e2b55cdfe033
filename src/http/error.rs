//! [`HttpError`]: why the HTTP endpoints could not be set up (options, credentials, TLS).

use std::path::PathBuf;

/// Why the HTTP endpoints could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A TLS certificate or key file could not be read or parsed.
    #[error("cannot read {what} file {}: {reason}", file.display())]
    TlsFile {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("tls: {0}")]
    Tls(#[source] rustls::Error),
    /// A `basic_auth_users` entry is not a bcrypt hash.
    #[error("basic auth user {user:?}: not a bcrypt hash: {reason}")]
    BadHash {
        /// The user.
        user: String,
        /// Why.
        reason: String,
    },
    /// A user name that basic auth cannot carry (empty, or with a `:`).
    #[error("basic auth user {user:?}: a user name must be non-empty and have no ':'")]
    BadUser {
        /// The user.
        user: String,
    },
    /// The bearer token file could not be read, or is empty.
    #[error("cannot read bearer_token_file {}: {reason}", file.display())]
    TokenFile {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// An open path that does not start with `/`.
    #[error("open path {0:?} must start with '/'")]
    BadOpenPath(String),
}
