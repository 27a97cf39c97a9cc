//! One multiplexed Redis connection shared by every request of the hot path.
//!
//! A deadpool checkout is exclusive and, for a connection used before, costs a PING round trip
//! (deadpool-redis checks it on every checkout): two round trips per rate-limit check, and a
//! queue for the pool's slots when thousands of requests arrive at once (the benchmark's 2,000
//! simultaneous streams waited past the Redis timeout and fell back to the local limiter). A
//! `MultiplexedConnection` pipelines any number of concurrent commands over one socket, so the
//! hot path takes one from the pool once, keeps a clone, and goes back to the pool only after
//! that connection failed.

use std::sync::RwLock;

use deadpool_redis::{Pool, PoolError};
use redis::aio::MultiplexedConnection;

pub struct SharedConnection {
    pool: Pool,
    current: RwLock<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            current: RwLock::new(None),
        }
    }

    /// The shared connection, or a new one from the pool when there is none.
    pub async fn get(&self) -> Result<MultiplexedConnection, PoolError> {
        if let Some(conn) = self.current.read().ok().and_then(|c| c.clone()) {
            return Ok(conn);
        }
        // The pooled object goes straight back; its multiplexed connection is what is kept.
        let conn = (*self.pool.get().await?).clone();
        if let Ok(mut current) = self.current.write() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }

    /// The last command failed or timed out: the next `get` starts from the pool again.
    pub fn reset(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
    }
}
