//! Secrets in the settings: [`Secret`], the string that never prints, and the `[security]`
//! section with the parsing of its master keys and pepper. Both `config` (which validates them
//! at start) and `crypto` / `keys` (which build ciphers and hashers from them) read them here,
//! so none of those three depends on another.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// A string that never prints: provider keys, master keys, peppers and URLs with passwords.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The `[security]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// `key_id:base64(32 bytes)`: the key that encrypts provider keys.
    pub master_key: Secret,
    /// Older master keys, still accepted for decryption while rows are re-wrapped.
    pub previous_master_keys: Vec<Secret>,
    /// Base64 of at least 32 bytes: the pepper of the keyed hash of API keys and tokens.
    pub hash_pepper: Secret,
    /// Allow upstreams and webhook URLs on loopback. The tests and the demo need it; turn it
    /// off in production.
    pub allow_loopback: bool,
    /// A PEM file of CA certificates trusted for providers and webhook receivers on top of the
    /// usual roots (the system's for the gateway, the bundled ones for the worker): for
    /// self-hosted providers behind an internal CA. Unset by default.
    #[serde(default)]
    pub extra_ca_file: Option<String>,
}

/// A master key as configured: its id and its 32 bytes, wiped from memory when dropped.
pub struct MasterKey {
    pub id: String,
    pub bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [redacted])", self.id)
    }
}

impl SecuritySettings {
    /// Checks the master keys and the pepper; the error names the setting at fault.
    pub fn validate(&self) -> Result<()> {
        self.master_keys()?;
        self.pepper()?;
        self.extra_ca_certs()?;
        Ok(())
    }

    /// The certificates of `extra_ca_file` (none when it is unset). A file that cannot be
    /// read, is not PEM, or holds no certificate is an error naming the setting.
    pub fn extra_ca_certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        let Some(path) = self.extra_ca_file.as_deref() else {
            return Ok(Vec::new());
        };
        let setting = "security.extra_ca_file";
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("{setting}: cannot read {path}: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{setting}: {path} is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "{setting}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            )));
        }
        Ok(certs)
    }

    /// The current master key, and the previous ones; key ids are unique.
    pub fn master_keys(&self) -> Result<(MasterKey, Vec<MasterKey>)> {
        let current = parse_master_key("security.master_key", &self.master_key)?;
        let mut previous: Vec<MasterKey> = Vec::new();
        for (i, old) in self.previous_master_keys.iter().enumerate() {
            let key = parse_master_key(&format!("security.previous_master_keys[{i}]"), old)?;
            if key.id == current.id || previous.iter().any(|k| k.id == key.id) {
                return Err(Error::Config(format!(
                    "security.previous_master_keys[{i}]: key id {:?} is used twice",
                    key.id
                )));
            }
            previous.push(key);
        }
        Ok((current, previous))
    }

    /// The decoded pepper: at least 32 bytes.
    pub fn pepper(&self) -> Result<Zeroizing<Vec<u8>>> {
        let pepper = Zeroizing::new(
            STANDARD
                .decode(self.hash_pepper.expose().trim())
                .map_err(|_| Error::Config("security.hash_pepper: not base64".into()))?,
        );
        if pepper.len() < 32 {
            return Err(Error::Config(
                "security.hash_pepper: must decode to at least 32 bytes".into(),
            ));
        }
        Ok(pepper)
    }
}

fn parse_master_key(setting: &str, value: &Secret) -> Result<MasterKey> {
    let Some((id, encoded)) = value.expose().split_once(':') else {
        return Err(Error::Config(format!(
            "{setting}: expected \"<key id>:<base64 of 32 bytes>\""
        )));
    };
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Config(format!(
            "{setting}: the key id must be non-empty letters, digits, '-' or '_'"
        )));
    }
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded.trim())
            .map_err(|_| Error::Config(format!("{setting}: the key is not base64")))?,
    );
    let mut bytes = Zeroizing::new([0u8; 32]);
    if decoded.len() != bytes.len() {
        return Err(Error::Config(format!(
            "{setting}: the key must decode to 32 bytes"
        )));
    }
    bytes.copy_from_slice(&decoded);
    Ok(MasterKey {
        id: id.to_owned(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn settings(current: &str, previous: &[&str], pepper: &str) -> SecuritySettings {
        SecuritySettings {
            master_key: Secret::new(current),
            previous_master_keys: previous.iter().map(|p| Secret::new(*p)).collect(),
            hash_pepper: Secret::new(pepper),
            allow_loopback: true,
            extra_ca_file: None,
        }
    }

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        let (current, _) = settings(&key("k1", 9), &[], &STANDARD.encode([1u8; 32]))
            .master_keys()
            .unwrap();
        let printed = format!("{current:?}");
        assert!(printed.contains("k1") && !printed.contains(&STANDARD.encode([9u8; 32])));
    }

    #[test]
    fn master_keys_come_current_first_with_their_bytes() {
        let s = settings(&key("k2", 2), &[&key("k1", 1)], &STANDARD.encode([0u8; 32]));
        let (current, previous) = s.master_keys().unwrap();
        assert_eq!(current.id, "k2");
        assert_eq!(*current.bytes, [2u8; 32]);
        assert_eq!(previous.len(), 1);
        assert_eq!(previous[0].id, "k1");
        assert_eq!(*previous[0].bytes, [1u8; 32]);
        assert_eq!(&s.pepper().unwrap()[..], &[0u8; 32]);
        s.validate().unwrap();
    }

    #[test]
    fn bad_peppers_name_the_setting() {
        for bad in ["not base64!", "c2hvcnQ="] {
            let err = settings(&key("k1", 1), &[], bad).validate().unwrap_err();
            assert!(
                err.to_string().contains("security.hash_pepper"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn extra_ca_files_are_read_and_bad_ones_name_the_setting() {
        let ok = settings(&key("k1", 1), &[], &STANDARD.encode([0u8; 32]));
        assert!(ok.extra_ca_certs().unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        let body = STANDARD.encode([0x30u8, 0x03, 0x02, 0x01, 0x01]);
        std::fs::write(
            &good,
            format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"),
        )
        .unwrap();
        let with = |path: &std::path::Path| SecuritySettings {
            extra_ca_file: Some(path.display().to_string()),
            ..ok.clone()
        };
        assert_eq!(with(&good).extra_ca_certs().unwrap().len(), 1);

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for bad in [dir.path().join("missing.pem"), garbage, broken] {
            let err = with(&bad).validate().unwrap_err().to_string();
            assert!(err.contains("security.extra_ca_file"), "{bad:?}: {err}");
        }
    }
}
