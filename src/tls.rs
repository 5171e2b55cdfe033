//! TLS: [`TlsOptions`] and the rustls [`ClientConfig`] built from them.
//!
//! [`client_config`] reads and checks every file when a session is added (through
//! [`SessionOptions::validate`](crate::SessionOptions::validate)), so a missing CA file or a
//! key that does not match its certificate is an [`OptionsError`](crate::OptionsError) from
//! `add_session`, not a failure at the first connect. The resulting `Arc<ClientConfig>` is
//! built once per session and reused for every connection attempt (rumqttc takes it as
//! `TlsConfiguration::Rustls`, for `mqtts://` and `wss://` alike).
//!
//! - **Trust**: the certificates of `ca_file` (PEM, one or several), or the system's roots
//!   (read once per process with `rustls-native-certs`) when no CA file is given.
//! - **Mutual TLS**: `client_cert` (PEM chain, leaf first) and `client_key` (PEM: PKCS#8
//!   `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`); a key that does not
//!   belong to the certificate is refused.
//! - **`server_name`**: rumqttc derives the TLS server name from the URL's host and offers no
//!   hook to change it, so the name is overridden in the *verifier*: [`FixedNameVerifier`]
//!   wraps rustls' WebPKI verifier and checks the certificate against the configured name
//!   whatever host was dialled. This is what makes `mqtts://10.0.0.5` work with a
//!   certificate issued for `broker.example`. The SNI sent stays the URL's host (none when
//!   the host is an IP address); brokers that pick their certificate by SNI need the name in
//!   the URL itself.
//! - **`skip_verify`**: [`AcceptAnyServerCert`] accepts any certificate (handshake
//!   signatures are still checked, so the peer must hold the key of the certificate it
//!   shows). The session logs a warning at every connect and reports
//!   `tls_skip_verify: true` in its status.
//! - **ALPN**: the protocols of `alpn`, in order.
//!
//! The crypto provider is *ring*, passed explicitly to every builder, so nothing depends on
//! the process-wide default; [`client_config`] also installs ring as that default when none
//! is installed yet (an application that installed another keeps it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

/// TLS settings of a session (the `tls` section of its options).
///
/// They apply to `mqtts://`, `ssl://`, `tls://` and `wss://` brokers. A session with a `tls`
/// section must use TLS URLs only: a plain `mqtt://` or `ws://` broker next to it is refused
/// by validation, so that a failover never sends credentials in clear text.
///
/// Built with [`TlsOptions::new`] and its setters (or `Default` and field assignments):
/// the struct is `#[non_exhaustive]`, so a TLS option added later breaks no caller.
///
/// ```
/// use mqtt_sessions::TlsOptions;
/// let tls = TlsOptions::new()
///     .ca_file("/etc/mqtt/ca.crt")
///     .client_cert("/etc/mqtt/client.crt")
///     .client_key("/etc/mqtt/client.key")
///     .server_name("broker.plant.example");
/// assert!(!tls.skip_verify);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust (one or several); the system's roots
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain, leaf first) for mutual TLS; needs `client_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Dangerous (anyone on the path can impersonate the
    /// broker); logged at every connect and shown in the session status.
    pub skip_verify: bool,
    /// Name the server certificate is verified against, instead of the URL's host (the
    /// SNI sent stays the URL's host; see the [module docs](self)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// ALPN protocols to offer, most preferred first (each 1 to 255 bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

impl TlsOptions {
    /// No CA file (the system's roots), no client certificate, verification on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates of this PEM file instead of the system's roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The client certificate (PEM chain, leaf first) for mutual TLS; needs
    /// [`client_key`](Self::client_key).
    pub fn client_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(path.into());
        self
    }

    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn client_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_key = Some(path.into());
        self
    }

    /// Verifies the broker's certificate against this name instead of the URL's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// ALPN protocols to offer, most preferred first.
    pub fn alpn<S: Into<String>>(mut self, protocols: impl IntoIterator<Item = S>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts any server certificate (test benches only; warned at every connect).
    pub fn skip_verify(mut self, skip: bool) -> Self {
        self.skip_verify = skip;
        self
    }
}

/// Why TLS options could not be turned into a TLS configuration.
///
/// `option` names the option as written in a config file (`tls.ca_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A configured file does not exist.
    #[error("{option} {path:?}: no such file")]
    MissingFile {
        /// The option (`tls.ca_file`, `tls.client_cert`, `tls.client_key`).
        option: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A configured file exists but cannot be read.
    #[error("{option} {path:?}: cannot read: {reason}")]
    UnreadableFile {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A PEM section of the file is malformed.
    #[error("{option} {path:?}: invalid PEM: {reason}")]
    InvalidPem {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no PEM `CERTIFICATE`.
    #[error("{option} {path:?}: no PEM certificate found")]
    NoCertificate {
        /// The option (`tls.ca_file` or `tls.client_cert`).
        option: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file cannot be used as a trust anchor.
    #[error("tls.ca_file {path:?}: certificate {index} is not usable: {reason}")]
    InvalidCaCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The client certificate cannot be used (for example an X.509 v1 certificate, which
    /// rustls refuses: issue it with extensions, as v3).
    #[error("tls.client_cert {path:?}: certificate not usable: {reason}")]
    InvalidClientCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file holds no private key.
    #[error(
        "tls.client_key {path:?}: no private key found (expected PEM \"PRIVATE KEY\", \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used (unsupported algorithm, bad encoding).
    #[error("tls.client_key {path:?}: unusable private key: {reason}")]
    InvalidPrivateKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key does not belong to the client certificate.
    #[error("tls.client_key {key:?} does not match the certificate in tls.client_cert {cert:?}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Only one of `client_cert` and `client_key` is set.
    #[error("{present} is set but {missing} is not (mutual TLS needs both)")]
    IncompleteClientAuth {
        /// The option that is set.
        present: &'static str,
        /// The option that is missing.
        missing: &'static str,
    },
    /// `server_name` is not a valid DNS name or IP address.
    #[error("tls.server_name {name:?}: not a valid DNS name or IP address")]
    InvalidServerName {
        /// The refused name.
        name: String,
    },
    /// An ALPN protocol name is empty or longer than 255 bytes.
    #[error("tls.alpn {protocol:?}: a protocol name must be 1 to 255 bytes")]
    InvalidAlpn {
        /// The refused protocol name.
        protocol: String,
    },
    /// No CA file is given and the system has no usable root certificates.
    #[error(
        "no tls.ca_file given and no system root certificates found ({reason}); \
         install the ca-certificates package or set tls.ca_file"
    )]
    NoSystemRoots {
        /// What the system store reported.
        reason: String,
    },
    /// rustls refused the configuration for another reason.
    #[error("cannot build the TLS configuration: {reason}")]
    Config {
        /// rustls' reason.
        reason: String,
    },
}

/// Builds the rustls client configuration of `opts`, reading and checking every file.
///
/// Also installs ring as the process-wide default crypto provider if none is installed.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let _ = ring::default_provider().install_default();
    let provider = Arc::new(ring::default_provider());
    let config_err = |e: rustls::Error| TlsError::Config {
        reason: e.to_string(),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;

    let server_name = opts
        .server_name
        .as_ref()
        .map(|name| {
            ServerName::try_from(name.clone())
                .map_err(|_| TlsError::InvalidServerName { name: name.clone() })
        })
        .transpose()?;

    let verifier: Arc<dyn ServerCertVerifier> = if opts.skip_verify {
        Arc::new(AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let roots = match &opts.ca_file {
            Some(path) => Arc::new(load_ca_file(path)?),
            None => system_roots()?,
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Config {
                reason: e.to_string(),
            })?;
        match server_name {
            Some(name) => Arc::new(FixedNameVerifier {
                inner: webpki,
                name,
            }),
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let mut config = match (&opts.client_cert, &opts.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = load_certs("tls.client_cert", cert_path)?;
            let key = load_private_key(key_path)?;
            // Loaded once here only to tell a bad key from a bad certificate below.
            provider
                .key_provider
                .load_private_key(key.clone_key())
                .map_err(|e| TlsError::InvalidPrivateKey {
                    path: key_path.clone(),
                    reason: e.to_string(),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        TlsError::KeyMismatch {
                            cert: cert_path.clone(),
                            key: key_path.clone(),
                        }
                    }
                    other => TlsError::InvalidClientCertificate {
                        path: cert_path.clone(),
                        reason: other.to_string(),
                    },
                })?
        }
        (Some(_), None) => {
            return Err(TlsError::IncompleteClientAuth {
                present: "tls.client_cert",
                missing: "tls.client_key",
            })
        }
        (None, Some(_)) => {
            return Err(TlsError::IncompleteClientAuth {
                present: "tls.client_key",
                missing: "tls.client_cert",
            })
        }
        (None, None) => builder.with_no_client_auth(),
    };

    for protocol in &opts.alpn {
        if protocol.is_empty() || protocol.len() > 255 {
            return Err(TlsError::InvalidAlpn {
                protocol: protocol.clone(),
            });
        }
        config.alpn_protocols.push(protocol.as_bytes().to_vec());
    }
    Ok(Arc::new(config))
}

/// A configuration that trusts nothing: every handshake fails with `UnknownIssuer`.
///
/// Used only if a TLS broker reaches the driver without a prepared configuration (a
/// hand-built [`SessionParts`](crate::session::SessionParts)): failing closed beats falling
/// back to plain TCP.
pub(crate) fn trust_nothing_config() -> Arc<ClientConfig> {
    let _ = ring::default_provider().install_default();
    let builder = match ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        // Not reached: ring supports the default protocol versions.
        Err(_) => ClientConfig::builder(),
    };
    Arc::new(
        builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// Reads a file, telling a missing file from an unreadable one.
fn read_file(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TlsError::MissingFile {
            option,
            path: path.to_path_buf(),
        },
        _ => TlsError::UnreadableFile {
            option,
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

/// Every PEM `CERTIFICATE` of a file (at least one).
fn load_certs(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidPem {
            option,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The trust anchors of a CA file; every certificate must be usable.
fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs("tls.ca_file", path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| TlsError::InvalidCaCertificate {
                path: path.to_path_buf(),
                index: i + 1,
                reason: e.to_string(),
            })?;
    }
    Ok(roots)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("tls.client_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => TlsError::InvalidPem {
            option: "tls.client_key",
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// The system's root certificates, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let reason = if found.errors.is_empty() {
                    "the system store is empty".to_string()
                } else {
                    found
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(reason);
            }
            for e in &found.errors {
                tracing::warn!(error = %e, "some system root certificates could not be loaded");
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(|reason| TlsError::NoSystemRoots { reason })
}

/// Verifies server certificates with rustls' WebPKI verifier against a fixed name (the
/// `server_name` option) instead of the host that was dialled.
pub struct FixedNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl fmt::Debug for FixedNameVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedNameVerifier")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for FixedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`skip_verify`); still checks that the handshake is
/// signed by the key of the certificate shown.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::process::Command;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    use super::*;

    fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.self_signed(&key).unwrap(), key)
    }

    /// A PKCS#8 key and a certificate for it, written to `dir`.
    fn pkcs8_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("pkcs8.crt"), dir.join("pkcs8.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Runs `openssl` (Debian package `openssl`) to make keys in the legacy formats rcgen
    /// (on ring) cannot write.
    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn self_signed_with_openssl(dir: &Path, key: &str, cert: &str) {
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                key,
                "-subj",
                "/CN=client",
                "-days",
                "2",
                "-out",
                cert,
            ],
        );
    }

    fn mtls(cert: PathBuf, key: PathBuf) -> TlsOptions {
        TlsOptions {
            client_cert: Some(cert),
            client_key: Some(key),
            skip_verify: true,
            ..TlsOptions::default()
        }
    }

    #[test]
    fn missing_ca_file_is_reported_with_its_path() {
        let opts = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::MissingFile {
                    option: "tls.ca_file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "tls.ca_file \"/nonexistent/ca.pem\": no such file"
        );
    }

    #[test]
    fn unreadable_file_is_not_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TlsOptions {
            ca_file: Some(dir.path().to_path_buf()), // a directory
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert!(matches!(err, TlsError::UnreadableFile { .. }), "{err:?}");
    }

    #[test]
    fn garbage_pem_gives_no_certificate_and_broken_pem_gives_invalid_pem() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not a certificate\n").unwrap();
        let opts = TlsOptions {
            ca_file: Some(garbage.clone()),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert_eq!(
            err,
            TlsError::NoCertificate {
                option: "tls.ca_file",
                path: garbage
            }
        );
        assert!(err.to_string().contains("no PEM certificate found"));

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n%%%% not base64 %%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let opts = TlsOptions {
            ca_file: Some(broken),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert!(matches!(err, TlsError::InvalidPem { .. }), "{err:?}");
    }

    #[test]
    fn several_ca_certificates_load_from_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        let pems: Vec<String> = ["ca-1", "ca-2", "ca-3"]
            .iter()
            .map(|n| ca(n).0.pem())
            .collect();
        std::fs::write(&bundle, pems.join("")).unwrap();
        assert_eq!(load_ca_file(&bundle).unwrap().len(), 3);
        let opts = TlsOptions {
            ca_file: Some(bundle),
            ..TlsOptions::default()
        };
        client_config(&opts).unwrap();
    }

    #[test]
    fn pkcs8_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pkcs8_pair(dir.path());
        assert!(std::fs::read_to_string(&k)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(matches!(
            load_private_key(&k).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
        client_config(&mtls(c, k)).unwrap();
    }

    #[test]
    fn pkcs1_rsa_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &["genrsa", "-traditional", "-out", "rsa.key", "2048"],
        );
        self_signed_with_openssl(dir.path(), "rsa.key", "rsa.crt");
        let k = dir.path().join("rsa.key");
        assert!(std::fs::read_to_string(&k)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(matches!(
            load_private_key(&k).unwrap(),
            PrivateKeyDer::Pkcs1(_)
        ));
        client_config(&mtls(dir.path().join("rsa.crt"), k)).unwrap();
    }

    #[test]
    fn sec1_ec_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ec.key",
            ],
        );
        self_signed_with_openssl(dir.path(), "ec.key", "ec.crt");
        let k = dir.path().join("ec.key");
        assert!(std::fs::read_to_string(&k)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert!(matches!(
            load_private_key(&k).unwrap(),
            PrivateKeyDer::Sec1(_)
        ));
        client_config(&mtls(dir.path().join("ec.crt"), k)).unwrap();
    }

    #[test]
    fn x509_v1_client_certificate_is_reported_as_the_unusable_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "v1.key",
            ],
        );
        openssl(
            d,
            &[
                "req", "-new", "-key", "v1.key", "-subj", "/CN=v1", "-out", "v1.csr",
            ],
        );
        // `x509 -req` without extensions writes a version 1 certificate.
        openssl(
            d,
            &[
                "x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-days", "2", "-out",
                "v1.crt",
            ],
        );
        let err = client_config(&mtls(d.join("v1.crt"), d.join("v1.key"))).unwrap_err();
        assert!(
            matches!(&err, TlsError::InvalidClientCertificate { path, .. } if path.ends_with("v1.crt")),
            "{err:?}"
        );
    }

    #[test]
    fn key_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = pkcs8_pair(dir.path());
        // The certificate file given as the key.
        let err = client_config(&mtls(c.clone(), c.clone())).unwrap_err();
        assert_eq!(err, TlsError::NoPrivateKey { path: c });
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = pkcs8_pair(dir.path());
        let other = dir.path().join("other.key");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = client_config(&mtls(c.clone(), other.clone())).unwrap_err();
        assert_eq!(
            err,
            TlsError::KeyMismatch {
                cert: c,
                key: other
            }
        );
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn certificate_without_key_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = pkcs8_pair(dir.path());
        let opts = TlsOptions {
            client_cert: Some(c),
            skip_verify: true,
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls.client_cert is set but tls.client_key is not (mutual TLS needs both)"
        );
    }

    #[test]
    fn bad_server_name_and_alpn_are_refused() {
        let opts = TlsOptions {
            server_name: Some("not a host name!".into()),
            skip_verify: true,
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&opts).unwrap_err(),
            TlsError::InvalidServerName { .. }
        ));
        let opts = TlsOptions {
            alpn: vec![String::new()],
            skip_verify: true,
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&opts).unwrap_err(),
            TlsError::InvalidAlpn { .. }
        ));
    }

    #[test]
    fn alpn_protocols_are_offered_in_order() {
        let opts = TlsOptions {
            alpn: vec!["mqtt".into(), "x-other".into()],
            skip_verify: true,
            ..TlsOptions::default()
        };
        let config = client_config(&opts).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"mqtt".to_vec(), b"x-other".to_vec()]
        );
    }
}
