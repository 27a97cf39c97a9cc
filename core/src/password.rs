//! Password hashing with argon2id at the OWASP cheat sheet's parameters (19 MiB, 2 passes,
//! 1 lane), in PHC string form so parameters can be raised later without breaking old hashes.

use std::sync::OnceLock;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

use crate::{Error, Result};

fn argon2() -> Result<Argon2<'static>> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| Error::Password(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with a fresh random salt. CPU-heavy: call it off the async executor.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Password(e.to_string()))
}

/// Whether `password` matches `stored`. A malformed stored hash is simply "no match".
/// CPU-heavy: call it off the async executor.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    argon2().is_ok_and(|a| a.verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the same time as a real verification, for logins with an unknown email: the answer
/// and its timing must not reveal whether an account exists.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored =
        DUMMY.get_or_init(|| hash_password("wrapx-dummy-password-for-timing").unwrap_or_default());
    let _ = verify_password(password, stored);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hashes_verify_and_use_argon2id_owasp_parameters() {
        let stored = hash_password("correct horse battery staple").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify_password("correct horse battery staple", &stored));
        assert!(!verify_password("wrong", &stored));
        assert!(!verify_password("anything", "not a phc string"));
        assert_ne!(
            stored,
            hash_password("correct horse battery staple").unwrap()
        );
    }
}
