//! Test certificates, made at test time with rcgen: a CA, server and client certificates
//! signed by it, self-signed and expired ones, written as PEM files into a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A PEM certificate file and its PEM (PKCS#8) key file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// A test certificate authority and the files it issued, in one temp dir (removed on drop).
///
/// The files are root-owned in a 0700 dir: readable by a mosquitto started with
/// `user root` (the harness's default).
pub struct TestPki {
    dir: TempDir,
    ca: Certificate,
    ca_key: KeyPair,
    /// The CA certificate (PEM), for `cafile` / `tls.ca_file`.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestPki {
    /// A new CA named `name`; its certificate is written to `<name>-ca.crt`.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-sessions-pki-")
            .tempdir()
            .expect("create a temp dir for certificates");
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("self-sign the CA");
        let ca_file = dir.path().join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, ca.pem()).expect("write the CA certificate");
        TestPki {
            dir,
            ca,
            ca_key,
            ca_file,
        }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server(&self, file: &str, names: &[&str]) -> CertFiles {
        let params = self.leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        self.issue(file, params)
    }

    /// A server certificate for `names` that expired in 2021.
    pub fn expired_server(&self, file: &str, names: &[&str]) -> CertFiles {
        let mut params = self.leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(file, params)
    }

    /// A client certificate with common name `cn`, signed by this CA.
    pub fn client(&self, file: &str, cn: &str) -> CertFiles {
        let mut params = self.leaf_params(&[], ExtendedKeyUsagePurpose::ClientAuth);
        params.distinguished_name.push(DnType::CommonName, cn);
        self.issue(file, params)
    }

    /// A self-signed server certificate for `names` (no CA vouches for it).
    pub fn self_signed_server(&self, file: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().expect("generate a key");
        let params = self.leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        let cert = params.self_signed(&key).expect("self-sign");
        self.write(file, &cert, &key)
    }

    fn leaf_params(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params
    }

    fn issue(&self, file: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign with the CA");
        self.write(file, &cert, &key)
    }

    fn write(&self, file: &str, cert: &Certificate, key: &KeyPair) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write a certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write a key");
        files
    }
}

/// mosquitto config lines for a TLS listener on `port` with `server`'s certificate,
/// trusting `ca_file` for client certificates; `require_certificate` turns mutual TLS on.
pub fn tls_listener(
    port: u16,
    ca_file: &Path,
    server: &CertFiles,
    require_certificate: bool,
) -> String {
    format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
        ca_file.display(),
        server.cert.display(),
        server.key.display(),
        require_certificate
    )
}
