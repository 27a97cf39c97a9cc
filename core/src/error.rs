//! The core's one error type. Binaries map it to their own responses at their boundary.

/// Everything that can fail inside the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A Wrap-X API key or token is not of the expected format.
    #[error(transparent)]
    KeyFormat(#[from] crate::keys::KeyFormatError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
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
