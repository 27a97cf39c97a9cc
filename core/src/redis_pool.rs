//! Redis: a deadpool pool of multiplexed connections, and the time limit every call gets.

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::{config::RedisSettings, Error, Result};

/// Builds the pool. Connections are made on first use, so Redis may start after us.
pub fn pool(settings: &RedisSettings) -> Result<Pool> {
    let timeout = Duration::from_millis(settings.timeout_ms);
    let mut config = Config::from_url(settings.url.expose());
    config.pool = Some(PoolConfig {
        max_size: settings.pool_size,
        timeouts: Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        },
        ..PoolConfig::default()
    });
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| Error::RedisPool(e.to_string()))
}
