//! The core's one error type, and the two small ones it wraps (of `keys` and `crypto`, which
//! re-export them). Binaries map it to their own responses at their boundary. Defined here,
//! this module depends on no other, so every module can return it without a cycle.

/// Everything that can fail inside the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A Wrap-X API key or token is not of the expected format.
    #[error(transparent)]
    KeyFormat(#[from] KeyFormatError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A password could not be hashed.
    #[error("password hashing failed: {0}")]
    Password(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    RedisPool(String),
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a presented Wrap-X key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with the Wrap-X prefix")]
    Prefix,
    #[error("the key has the wrong length")]
    Length,
    #[error("the key holds characters that are not base64url")]
    Encoding,
    #[error("the key's checksum does not match")]
    Checksum,
}

/// Why encrypting or decrypting a stored secret failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the ciphertext is not in the wxenc1 format")]
    Malformed,
    #[error("no master key with id {0:?} is configured")]
    UnknownKeyId(String),
    #[error("decryption failed: wrong key, tampered data or another row's ciphertext")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}
