//! TLS to providers: which roots the gateway trusts, and a clear log line when a provider's
//! certificate is refused.
//!
//! pingora's rustls connector trusts either the platform's roots or, when
//! `ServerConf.ca_file` is set, only that file. `security.extra_ca_file` must add to the
//! platform's roots, not replace them, so at start [`RootsBundle::build`] writes one PEM file
//! holding both (the platform's, as pingora would load them, then the extra CAs) and the
//! gateway hands its path to pingora as `ca_file`. pingora reads it once, when the proxy is
//! built; the file is removed when the bundle is dropped at exit. Without the setting nothing
//! is written and pingora loads the platform's roots itself.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, Engine};
use pingora_core::tls::{load_native_certs, CertificateDer, RootCertStore};
use pingora_error::{Error, ErrorType};
use wrapx_core::secret::SecuritySettings;

const SETTING: &str = "security.extra_ca_file";

/// The platform's roots plus `security.extra_ca_file`, as one PEM file pingora loads.
#[derive(Debug)]
pub struct RootsBundle {
    path: PathBuf,
}

impl RootsBundle {
    /// The bundle, or `None` when `security.extra_ca_file` is unset (pingora then loads the
    /// platform's roots on its own). An extra CA that cannot be read or is not a usable CA
    /// certificate is an error naming the setting; a platform root rustls cannot use is left
    /// out, as is the whole platform store when there is none (with a warning), so the extra CA
    /// alone is trusted then.
    pub fn build(security: &SecuritySettings) -> anyhow::Result<Option<Self>> {
        let extra = security.extra_ca_certs()?;
        if extra.is_empty() {
            return Ok(None);
        }
        let mut store = RootCertStore::empty();
        let mut pem = String::new();
        let platform = match load_native_certs() {
            Ok(certs) => certs,
            Err(e) => {
                tracing::warn!(error = %e, "no platform CA certificates: trusting {SETTING} alone");
                Vec::new()
            }
        };
        let mut skipped = 0usize;
        for cert in platform {
            if store.add(cert.clone()).is_ok() {
                push_pem(&mut pem, &cert);
            } else {
                skipped += 1;
            }
        }
        let system = store.len();
        for (i, cert) in extra.iter().enumerate() {
            store
                .add(cert.clone())
                .with_context(|| format!("{SETTING}: certificate {} is not a usable CA", i + 1))?;
            push_pem(&mut pem, cert);
        }
        let path = unique_path();
        write_new(&path, pem.as_bytes())
            .with_context(|| format!("{SETTING}: write the CA bundle {}", path.display()))?;
        tracing::info!(
            system,
            skipped,
            extra = extra.len(),
            bundle = %path.display(),
            "trusting {SETTING} on top of the platform's CA certificates"
        );
        Ok(Some(Self { path }))
    }

    /// The bundle's path, for `ServerConf.ca_file`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootsBundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A file name no other process or start of this one uses.
fn unique_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wrapx-gateway-{}-{}-roots.pem",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Creates `path` (never through an existing file or link) and writes `bytes` to it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn push_pem(pem: &mut String, cert: &CertificateDer<'_>) {
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    let encoded = STANDARD.encode(cert.as_ref());
    for line in encoded.as_bytes().chunks(64) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
}

/// A sentence for the log when `e` is a refused TLS handshake with a provider, naming the
/// host (the SNI the gateway sent) and why its certificate was refused; `None` for any other
/// error. It holds no secret: pingora's handshake error carries only the name and the reason.
///
/// pingora flattens the handshake's cause into its context text ("TLS connect() failed: …
/// invalid peer certificate: UnknownIssuer, SNI: api.example.com"), so the reason is read
/// from the text of the error's chain.
pub fn describe_tls_failure(e: &Error) -> Option<String> {
    let mut tls = false;
    let mut level: Option<&Error> = Some(e);
    while let Some(err) = level {
        if matches!(
            err.etype(),
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError
        ) {
            tls = true;
            break;
        }
        level = err
            .cause
            .as_ref()
            .and_then(|c| c.downcast_ref::<Box<Error>>().map(|b| &**b))
            .or_else(|| err.cause.as_ref().and_then(|c| c.downcast_ref::<Error>()));
    }
    if !tls {
        return None;
    }
    let text = e.to_string();
    let host = text
        .rsplit_once("SNI: ")
        .map(|(_, rest)| {
            rest.split(|c: char| c.is_whitespace() || c == ',')
                .next()
                .unwrap_or_default()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or("the provider");
    let reason = if text.contains("UnknownIssuer") {
        format!(
            "is not trusted: it is not issued by a trusted CA (for a provider behind an \
             internal CA, add that CA to {SETTING})"
        )
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "is not valid for that host name".to_owned()
    } else if text.contains("Expired") || text.contains("certificate expired") {
        "has expired".to_owned()
    } else if text.contains("NotValidYet") || text.contains("not valid yet") {
        "is not valid yet".to_owned()
    } else if text.contains("invalid peer certificate") {
        "was refused".to_owned()
    } else {
        return Some(format!("TLS handshake with provider {host} failed"));
    };
    Some(format!("provider TLS certificate of {host} {reason}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn handshake_error(reason: &str) -> Box<Error> {
        // The shape pingora's rustls client gives a refused handshake.
        let inner = Error::explain(
            ErrorType::TLSHandshakeFailure,
            format!("tls connect error cause: {reason}"),
        );
        // What the log shows after it: the socket's own address, as a cause.
        let outer = Error::explain(
            ErrorType::TLSHandshakeFailure,
            format!(
                "TLS connect() failed: {inner}, SNI: localhost cause: local address \
                 127.0.0.1:48608"
            ),
        );
        outer.into_up()
    }

    #[test]
    fn refused_certificates_are_described_with_their_host() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                "provider TLS certificate of localhost is not trusted",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"localhost\"; \
                 certificate is only valid for wrong-name.invalid",
                "provider TLS certificate of localhost is not valid for that host name",
            ),
            (
                "invalid peer certificate: Expired",
                "provider TLS certificate of localhost has expired",
            ),
            (
                "received fatal alert: HandshakeFailure",
                "TLS handshake with provider localhost failed",
            ),
        ];
        for (reason, want) in cases {
            let got = describe_tls_failure(&handshake_error(reason)).unwrap();
            assert!(got.starts_with(want), "{reason}: {got}");
        }
    }

    #[test]
    fn other_errors_are_not_described() {
        let e = Error::explain(ErrorType::ConnectRefused, "connection refused").into_up();
        assert_eq!(describe_tls_failure(&e), None);
    }

    fn security(extra_ca_file: Option<&Path>) -> SecuritySettings {
        let settings = wrapx_core::config::Settings::load_with_env(None, Vec::new()).unwrap();
        SecuritySettings {
            extra_ca_file: extra_ca_file.map(|p| p.display().to_string()),
            ..settings.security
        }
    }

    #[test]
    fn the_bundle_holds_the_platform_roots_then_the_extra_ca() {
        assert!(RootsBundle::build(&security(None)).unwrap().is_none());

        let ca = wrapx_testkit::tls::TestCa::new();
        let bundle = RootsBundle::build(&security(Some(ca.ca_file())))
            .unwrap()
            .unwrap();
        let pem = std::fs::read_to_string(bundle.path()).unwrap();
        let platform = load_native_certs().map_or(0, |c| c.len());
        let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
        // Every platform root rustls accepts (on a machine with a CA store, most of them), then
        // the extra CA.
        assert!(count <= platform + 1, "{count} of {platform} + 1");
        assert!(
            platform == 0 || count > platform / 2,
            "{count} of {platform} + 1"
        );
        let extra = std::fs::read_to_string(ca.ca_file()).unwrap();
        let last = &pem[pem.rfind("-----BEGIN CERTIFICATE-----").unwrap()..];
        assert_eq!(last.trim(), extra.trim());
        // pingora loads it as it would: every certificate usable.
        let mut store = RootCertStore::empty();
        pingora_core::tls::load_ca_file_into_store(bundle.path(), &mut store).unwrap();
        assert_eq!(store.len(), count);

        let path = bundle.path().to_owned();
        drop(bundle);
        assert!(!path.exists(), "the bundle is removed at exit");
    }

    #[test]
    fn a_bad_extra_ca_names_the_setting() {
        let ca = wrapx_testkit::tls::TestCa::new();
        // A leaf's key is PEM but not a certificate; a missing file cannot be read.
        for bad in [
            ca.localhost().key_file.clone(),
            ca.dir().join("missing.pem"),
        ] {
            let err = RootsBundle::build(&security(Some(&bad))).unwrap_err();
            assert!(
                format!("{err:#}").contains("security.extra_ca_file"),
                "{bad:?}: {err:#}"
            );
        }
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let mut pem = String::new();
        push_pem(&mut pem, &CertificateDer::from(vec![7u8; 100]));
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(STANDARD.decode(body).unwrap(), vec![7u8; 100]);
    }
}
