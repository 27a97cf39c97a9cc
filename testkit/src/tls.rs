//! A test certificate authority made at test time with `rcgen`, for HTTPS servers a client
//! must be told to trust: the CA and two leaves it signed, written as PEM files to a temporary
//! directory the [`TestCa`] owns (removed when it is dropped).
//!
//! - [`TestCa::localhost`]: valid for `localhost` and `127.0.0.1`;
//! - [`TestCa::wrong_name`]: valid only for `wrong-name.invalid`, for name-mismatch tests.
//!
//! Serve a leaf with [`Leaf::acceptor`] (tokio-rustls, re-exported as [`tokio_rustls`]) or,
//! with the `mock-llm` feature, as the mock provider's certificate ([`Leaf::mock_tls`]);
//! point the client at [`TestCa::ca_file`] (e.g. `WRAPX_SECURITY__EXTRA_CA_FILE`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
pub use tokio_rustls;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};

/// The name the wrong-name leaf is issued for: under `.invalid`, which never resolves.
pub const WRONG_NAME: &str = "wrong-name.invalid";

/// A CA and two leaves it signed, as PEM files in a directory of the test's own.
pub struct TestCa {
    dir: TempDir,
    ca_file: PathBuf,
    localhost: Leaf,
    wrong_name: Leaf,
}

/// A leaf certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate alone (the CA is what the client must trust).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8).
    pub key_file: PathBuf,
    /// The names it is valid for.
    pub names: Vec<String>,
}

impl TestCa {
    /// Makes a fresh CA (ECDSA P-256, CN "Wrap-X test CA") and its two leaves.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wrapx-test-ca-")
            .tempdir()
            .expect("create a temporary directory for the test CA");
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "Wrap-X test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("self-sign the CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write ca.pem");

        let leaf = |stem: &str, names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let key = KeyPair::generate().expect("generate a leaf key");
            let mut params = CertificateParams::new(names.clone()).expect("leaf parameters");
            params
                .distinguished_name
                .push(DnType::CommonName, &names[0]);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .expect("sign the leaf with the CA");
            let cert_file = dir.path().join(format!("{stem}.pem"));
            let key_file = dir.path().join(format!("{stem}.key"));
            std::fs::write(&cert_file, cert.pem()).expect("write the leaf certificate");
            std::fs::write(&key_file, key.serialize_pem()).expect("write the leaf key");
            Leaf {
                cert_file,
                key_file,
                names,
            }
        };
        let localhost = leaf("localhost", &["localhost", "127.0.0.1"]);
        let wrong_name = leaf("wrong-name", &[WRONG_NAME]);
        Self {
            dir,
            ca_file,
            localhost,
            wrong_name,
        }
    }

    /// The CA certificate (PEM): what a client must add to its roots to trust the leaves.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The directory holding every file; a test may write its own files (a corrupt CA) here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The leaf for `localhost` and `127.0.0.1`.
    pub fn localhost(&self) -> &Leaf {
        &self.localhost
    }

    /// The leaf for [`WRONG_NAME`] only.
    pub fn wrong_name(&self) -> &Leaf {
        &self.wrong_name
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Leaf {
    /// A TLS acceptor serving this certificate (HTTP/1.1 by ALPN), for a server of the test's
    /// own: accept TCP, then `acceptor.accept(stream)`.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let certs = CertificateDer::pem_file_iter(&self.cert_file)
            .expect("open the leaf certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("read the leaf certificate");
        let key = PrivateKeyDer::from_pem_file(&self.key_file).expect("read the leaf key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("a server configuration for the leaf");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// The mock provider's TLS setting for this certificate (`MockConfig { tls: Some(..) }`).
    #[cfg(feature = "mock-llm")]
    pub fn mock_tls(&self) -> crate::mock_llm::MockTls {
        crate::mock_llm::MockTls {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}
