//! Encryption at rest of provider API keys: XChaCha20-Poly1305 (192-bit random nonces are safe
//! to draw at random for any number of messages) under a master key named by a key id, so the
//! master key can rotate: new rows use the current key, older ids stay readable until
//! re-wrapped. The owner and row are bound in as associated data, so a ciphertext copied to
//! another row does not decrypt.
//!
//! Stored form: `wxenc1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.

use std::{collections::HashMap, fmt};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use uuid::Uuid;
use zeroize::Zeroizing;

pub use crate::error::CryptoError;
use crate::{
    secret::{MasterKey, SecuritySettings},
    Result,
};

const FORMAT: &str = "wxenc1";
const NONCE_LEN: usize = 24;

/// The configured master keys: the current one encrypts, all of them decrypt.
#[derive(Clone)]
pub struct MasterKeys {
    current_id: String,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MasterKeys(current={}, known={})",
            self.current_id,
            self.keys.len()
        )
    }
}

impl MasterKeys {
    /// The keys of `[security]`; an invalid one is an error that names its setting.
    pub fn from_settings(security: &SecuritySettings) -> Result<Self> {
        let (current, previous) = security.master_keys()?;
        let current_id = current.id.clone();
        let keys = std::iter::once(current)
            .chain(previous)
            .map(|MasterKey { id, bytes }| (id, XChaCha20Poly1305::new((&*bytes).into())))
            .collect();
        Ok(Self { current_id, keys })
    }

    /// Encrypts under the current master key, bound to `associated_data`.
    pub fn encrypt(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<String, CryptoError> {
        let cipher = self
            .keys
            .get(&self.current_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(self.current_id.clone()))?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{FORMAT}:{}:{}",
            self.current_id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Decrypts a stored value; the plaintext is wiped from memory when dropped.
    pub fn decrypt(
        &self,
        stored: &str,
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (key_id, blob) = split(stored)?;
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;
        if blob.len() <= NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: associated_data,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Whether a stored value was made under an older master key and should be re-wrapped.
    pub fn needs_rewrap(&self, stored: &str) -> bool {
        split(stored)
            .map(|(id, _)| id != self.current_id)
            .unwrap_or(false)
    }

    /// Decrypts under whichever key made `stored` and encrypts again under the current one.
    pub fn rewrap(&self, stored: &str, associated_data: &[u8]) -> Result<String, CryptoError> {
        let plaintext = self.decrypt(stored, associated_data)?;
        self.encrypt(&plaintext, associated_data)
    }

    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }
}

/// The associated data of a provider key: its table, row and owner.
pub fn provider_key_aad(provider_id: Uuid, user_id: Uuid) -> Vec<u8> {
    format!("llm_providers.api_key:{provider_id}:{user_id}").into_bytes()
}

/// The associated data of a webhook's signing secret: its table, row and wrapped API.
pub fn webhook_secret_aad(webhook_id: Uuid, wrapped_api_id: Uuid) -> Vec<u8> {
    format!("webhooks.secret:{webhook_id}:{wrapped_api_id}").into_bytes()
}

fn split(stored: &str) -> Result<(&str, Vec<u8>), CryptoError> {
    let mut parts = stored.splitn(3, ':');
    let (Some(FORMAT), Some(key_id), Some(encoded)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed);
    };
    let blob = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| CryptoError::Malformed)?;
    Ok((key_id, blob))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::secret::Secret;

    fn settings(current: &str, previous: &[&str]) -> SecuritySettings {
        SecuritySettings {
            master_key: Secret::new(current),
            previous_master_keys: previous.iter().map(|p| Secret::new(*p)).collect(),
            hash_pepper: Secret::new(STANDARD.encode([7u8; 32])),
            allow_loopback: true,
            extra_ca_file: None,
        }
    }

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn round_trips_with_the_same_associated_data() {
        let keys = MasterKeys::from_settings(&settings(&key("k1", 1), &[])).unwrap();
        let aad = provider_key_aad(Uuid::now_v7(), Uuid::now_v7());
        let stored = keys.encrypt(b"sk-provider-secret", &aad).unwrap();
        assert!(stored.starts_with("wxenc1:k1:"));
        assert!(!stored.contains("sk-provider-secret"));
        assert_eq!(
            &keys.decrypt(&stored, &aad).unwrap()[..],
            b"sk-provider-secret"
        );
        // Random nonces: the same plaintext never encrypts the same way twice.
        assert_ne!(stored, keys.encrypt(b"sk-provider-secret", &aad).unwrap());
    }

    #[test]
    fn refuses_tampering_other_rows_and_unknown_keys() {
        let keys = MasterKeys::from_settings(&settings(&key("k1", 1), &[])).unwrap();
        let owner = Uuid::now_v7();
        let aad = provider_key_aad(Uuid::now_v7(), owner);
        let stored = keys.encrypt(b"secret", &aad).unwrap();

        let other_row = provider_key_aad(Uuid::now_v7(), owner);
        assert_eq!(
            keys.decrypt(&stored, &other_row).unwrap_err(),
            CryptoError::Decrypt
        );

        let (head, body) = stored.rsplit_once(':').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{head}:{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(
            keys.decrypt(&tampered, &aad).unwrap_err(),
            CryptoError::Decrypt
        );

        let unknown = stored.replacen(":k1:", ":k9:", 1);
        assert_eq!(
            keys.decrypt(&unknown, &aad).unwrap_err(),
            CryptoError::UnknownKeyId("k9".into())
        );
        for junk in [
            "",
            "wxenc1",
            "wxenc1:k1",
            "wxenc1:k1:!!",
            "wxenc2:k1:AAAA",
            "wxenc1:k1:AAAA",
        ] {
            assert_eq!(
                keys.decrypt(junk, &aad).unwrap_err(),
                CryptoError::Malformed,
                "{junk}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_rows_readable_and_rewraps_them() {
        let aad = provider_key_aad(Uuid::now_v7(), Uuid::now_v7());
        let old = MasterKeys::from_settings(&settings(&key("k1", 1), &[])).unwrap();
        let stored = old.encrypt(b"secret", &aad).unwrap();

        let rotated =
            MasterKeys::from_settings(&settings(&key("k2", 2), &[&key("k1", 1)])).unwrap();
        assert!(rotated.needs_rewrap(&stored));
        assert_eq!(&rotated.decrypt(&stored, &aad).unwrap()[..], b"secret");
        let rewrapped = rotated.rewrap(&stored, &aad).unwrap();
        assert!(rewrapped.starts_with("wxenc1:k2:"));
        assert!(!rotated.needs_rewrap(&rewrapped));
        assert_eq!(&rotated.decrypt(&rewrapped, &aad).unwrap()[..], b"secret");
    }

    #[test]
    fn bad_master_keys_name_the_setting() {
        for bad in [
            "nokeyid",
            ":AAAA",
            "k1:not base64",
            "k1:c2hvcnQ=",
            "k 1:AAAA",
        ] {
            let err = MasterKeys::from_settings(&settings(bad, &[])).unwrap_err();
            assert!(
                err.to_string().contains("security.master_key"),
                "{bad}: {err}"
            );
        }
        let err =
            MasterKeys::from_settings(&settings(&key("k1", 1), &[&key("k1", 2)])).unwrap_err();
        assert!(err.to_string().contains("previous_master_keys[0]"), "{err}");
    }
}
