//! Wrap-X API keys and session tokens: their format, and the keyed hash that is all the
//! database and Redis ever hold of them.
//!
//! A key is `wxk_` followed by 48 base64url characters that encode 32 random bytes and a CRC32
//! of the prefix and those bytes. The fixed prefix lets secret scanners find leaked keys; the
//! checksum lets the gateway refuse a mistyped or made-up key before any lookup.

use std::fmt;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use subtle::ConstantTimeEq;

pub use crate::error::KeyFormatError;
use crate::{secret::SecuritySettings, Result};

/// The fixed prefix of every Wrap-X API key.
pub const KEY_PREFIX: &str = "wxk_";
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 4;
/// Length of a whole key: the prefix and base64url of 36 bytes (no padding needed).
pub const KEY_LEN: usize = KEY_PREFIX.len() + (SECRET_LEN + CHECKSUM_LEN) / 3 * 4;

/// A well-formed Wrap-X API key. It never prints: `Debug` shows only its hint.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Makes a new key from 32 bytes of the operating system's randomness.
    pub fn generate() -> Self {
        let mut raw = [0u8; SECRET_LEN + CHECKSUM_LEN];
        rand::rngs::OsRng.fill_bytes(&mut raw[..SECRET_LEN]);
        let crc = checksum(&raw[..SECRET_LEN]);
        raw[SECRET_LEN..].copy_from_slice(&crc.to_be_bytes());
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(KEY_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut key);
        Self(key)
    }

    /// Checks the prefix, length, alphabet and checksum: no lookup is needed to refuse a key.
    pub fn parse(presented: &str) -> Result<Self, KeyFormatError> {
        let body = presented
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeyFormatError::Prefix)?;
        if presented.len() != KEY_LEN {
            return Err(KeyFormatError::Length);
        }
        let mut raw = [0u8; SECRET_LEN + CHECKSUM_LEN];
        let written = URL_SAFE_NO_PAD
            .decode_slice(body, &mut raw)
            .map_err(|_| KeyFormatError::Encoding)?;
        if written != raw.len() {
            return Err(KeyFormatError::Length);
        }
        let expected = checksum(&raw[..SECRET_LEN]).to_be_bytes();
        if !bool::from(expected.ct_eq(&raw[SECRET_LEN..])) {
            return Err(KeyFormatError::Checksum);
        }
        Ok(Self(presented.to_owned()))
    }

    /// The key itself; only for the one answer that shows it at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What an owner sees to tell keys apart: the prefix and the first four characters.
    pub fn hint(&self) -> String {
        self.0[..KEY_PREFIX.len() + 4].to_owned()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.hint())
    }
}

fn checksum(secret: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(KEY_PREFIX.as_bytes());
    hasher.update(secret);
    hasher.finalize()
}

/// The keyed BLAKE3 hash of a key or token, as stored (`key_hash`, `token_hash`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| Self(*h.as_bytes()))
    }

    /// Compares in constant time, so a lookup never leaks how much of a hash matched.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({})", &self.to_hex()[..8])
    }
}

/// Hashes keys and tokens under the configured pepper, so a stolen database alone does not
/// let anyone test guesses offline.
#[derive(Clone)]
pub struct KeyHasher {
    api_key: [u8; 32],
    token: [u8; 32],
}

impl KeyHasher {
    /// Derives one hashing key per purpose from the pepper.
    pub fn new(pepper: &[u8]) -> Self {
        let mut material = Vec::with_capacity(pepper.len());
        material.extend_from_slice(pepper);
        Self {
            api_key: blake3::derive_key("wrapx 2026 api key hash v1", &material),
            token: blake3::derive_key("wrapx 2026 session token hash v1", &material),
        }
    }

    /// The hasher of `[security]`'s pepper; an invalid pepper is an error that names it.
    pub fn from_settings(security: &SecuritySettings) -> Result<Self> {
        Ok(Self::new(&security.pepper()?))
    }

    pub fn hash_key(&self, key: &ApiKey) -> SecretHash {
        SecretHash(*blake3::keyed_hash(&self.api_key, key.0.as_bytes()).as_bytes())
    }

    pub fn hash_token(&self, token: &str) -> SecretHash {
        SecretHash(*blake3::keyed_hash(&self.token, token.as_bytes()).as_bytes())
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher([redacted])")
    }
}

/// A random opaque token (access or refresh) with a prefix that says what it is.
pub fn generate_token(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(raw, &mut token);
    token
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn generated_keys_parse_and_are_distinct() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(ApiKey::parse(a.expose()).unwrap().expose(), a.expose());
    }

    #[test]
    fn malformed_keys_are_refused_by_format() {
        let good = ApiKey::generate().expose().to_owned();
        let mut flipped = good.clone().into_bytes();
        // Change one character of the random part: the checksum no longer matches.
        let i = KEY_PREFIX.len() + 3;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases: Vec<(String, KeyFormatError)> = vec![
            (String::new(), KeyFormatError::Prefix),
            ("sk-abc".into(), KeyFormatError::Prefix),
            (good.replacen("wxk_", "wxq_", 1), KeyFormatError::Prefix),
            (format!("{good}A"), KeyFormatError::Length),
            (good[..good.len() - 1].to_owned(), KeyFormatError::Length),
            (
                format!("{}!{}", &good[..10], &good[11..]),
                KeyFormatError::Encoding,
            ),
            (
                format!("{}é{}", &good[..10], &good[12..]),
                KeyFormatError::Encoding,
            ),
            (flipped, KeyFormatError::Checksum),
        ];
        for (presented, expected) in cases {
            assert_eq!(
                ApiKey::parse(&presented).unwrap_err(),
                expected,
                "{presented:?}"
            );
        }
    }

    #[test]
    fn keys_do_not_print() {
        let key = ApiKey::generate();
        let printed = format!("{key:?}");
        assert!(!printed.contains(key.expose()));
        assert!(printed.contains(&key.hint()));
    }

    #[test]
    fn keyed_hash_is_stable_and_differs_by_pepper() {
        let key = ApiKey::generate();
        let a = KeyHasher::new(&[1u8; 32]);
        let a_again = KeyHasher::new(&[1u8; 32]);
        let b = KeyHasher::new(&[2u8; 32]);
        assert_eq!(a.hash_key(&key), a_again.hash_key(&key));
        assert_ne!(a.hash_key(&key), b.hash_key(&key));
        assert!(a.hash_key(&key).ct_eq(&a_again.hash_key(&key)));
        // Hex round-trips, and a key and a token with the same text hash differently.
        let h = a.hash_key(&key);
        assert_eq!(SecretHash::from_hex(&h.to_hex()), Some(h));
        assert_ne!(a.hash_token(key.expose()), h);
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let t = generate_token("wxa_");
        assert!(t.starts_with("wxa_"));
        assert_eq!(t.len(), 4 + 43);
        assert_ne!(t, generate_token("wxa_"));
    }
}
