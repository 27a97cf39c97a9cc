//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed
//! by the base64-decoded part of the `whsec_…` secret.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A webhook's signing key, ready to sign. Never printed.
#[derive(Clone)]
pub struct SigningSecret {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the webhook secret does not start with whsec_")]
    Prefix,
    #[error("the webhook secret is not valid base64 after whsec_")]
    Base64,
    #[error("the webhook secret is empty")]
    Empty,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key =
            zeroize::Zeroizing::new(STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?);
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        // HMAC takes keys of any length, so this cannot fail for a non-empty key.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| SecretError::Empty)?;
        Ok(Self { mac })
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_the_specification_example() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(
            SigningSecret::parse("whsec_!!!").unwrap_err(),
            SecretError::Base64
        );
        assert_eq!(
            SigningSecret::parse("whsec_").unwrap_err(),
            SecretError::Empty
        );
        assert!(!format!(
            "{:?}",
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
        )
        .contains("MfKQ"));
    }
}
