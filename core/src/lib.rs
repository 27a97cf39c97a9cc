//! What two or more Wrap-X binaries share, and nothing else: configuration and its secrets,
//! domain types, the event schema, the key format and hashing, password hashing, encryption of
//! provider keys, cache names and invalidation messages, routing, the retry backoff, and connection
//! set-up for PostgreSQL, Redis and RabbitMQ.

pub mod amqp;
pub mod backoff;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod keys;
pub mod never;
pub mod password;
pub mod pricing;
pub mod prompt;
pub mod redis_pool;
pub mod routing;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod types;

pub use error::{Error, Result};
