//! TLS for the mock, so tests can reach it as they reach a real provider: over HTTPS, with a
//! certificate the client must trust. The certificate and key come from PEM files (the test
//! kit writes them from a test CA); rustls with ring, the provider the gateway uses too.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};
use tokio_rustls::TlsAcceptor;

/// The mock's certificate: serve HTTPS with it instead of plain HTTP.
#[derive(Debug, Clone)]
pub struct MockTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl MockTls {
    /// The acceptor for this certificate, HTTP/1.1 only (as the mock serves).
    pub(crate) fn acceptor(&self) -> std::io::Result<TlsAcceptor> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
        };
        let certs = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(&format!("{}", self.cert_file.display()), &e))?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| invalid(&format!("{}", self.key_file.display()), &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid("TLS certificate", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
