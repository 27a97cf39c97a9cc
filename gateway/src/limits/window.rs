//! The exact limiter: counters per sub-window in a Redis hash, one atomic script per check.
//!
//! Admissions are grouped in sub-windows of 1/[`SUB_WINDOWS`] of the window, aligned on the
//! Redis server's clock; the hash `CacheNames::rate_limit(subject)` holds, per sub-window, the
//! slots admitted in it and the time of its last admission, and the total of them all. A
//! sub-window counts, whole, until that last admission is a `window` old; a check drops the
//! sub-windows that have left (from the oldest, usually none or one), admits the request only
//! if the total is below `limit`, and reads a handful of fields whatever the traffic. The key
//! expires when its newest admission leaves the window.
//!
//! Bounds, for every instance together (the script is atomic and reads only Redis's clock):
//! - at most `limit` admitted in any span of `window`: no request counts for less than
//!   `window`, so there is no double burst at any edge;
//! - a request is refused only when `limit` were admitted in the `window` plus one sub-window
//!   (5% of the window) before it: an early request of a sub-window counts until the last one
//!   of it leaves, up to a sub-window late;
//! - `retry-after` and the reset are the exact moments those counts leave, never more than
//!   `window` away.
//!
//! The previous version, a sorted set of every admitted request, was exact to the microsecond
//! but held up to 120,000 members for a key at 2,000 requests/s over 60 s, and cost about
//! 200 µs of Redis per check for a block of slots (see `lease`); this holds at most two short
//! fields per sub-window and four more per key, whatever its traffic (`wrapx-limit-cost` in
//! benches/ measures both).

use std::time::Duration;

use deadpool_redis::Pool;
use uuid::Uuid;
use wrapx_core::cache::CacheNames;

use super::{Decision, LimitSource};
use crate::redis_conn::SharedConnection;

/// Sub-windows per window: the limiter's resolution, 5% of the window.
pub(super) const SUB_WINDOWS: u64 = 20;

/// The script, shared with the benchmark that measures its Redis cost.
const SCRIPT: &str = include_str!("window.lua");

/// The width of one sub-window, in µs, never 0.
fn sub_window_us(window_us: u64) -> u64 {
    (window_us / SUB_WINDOWS).max(1)
}

pub(super) struct SlidingWindow {
    redis: SharedConnection,
    names: CacheNames,
    /// Sent as `EVALSHA`; `redis::Script` falls back to loading it when Redis does not know
    /// the hash (a restarted or flushed Redis).
    script: redis::Script,
}

/// Why a Redis check gave no decision.
#[derive(Debug, thiserror::Error)]
pub(super) enum RedisCheckError {
    #[error("no Redis connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("the rate-limit script failed: {0}")]
    Script(#[from] redis::RedisError),
}

impl SlidingWindow {
    pub(super) fn new(pool: Pool, names: CacheNames) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            names,
            script: redis::Script::new(SCRIPT),
        }
    }

    /// Checks one request, reserving `slots` for it and later ones when the limit leaves room
    /// (at least one when it is allowed); returns the decision and the slots granted.
    pub(super) async fn check(
        &self,
        subject: Uuid,
        limit: u32,
        window: Duration,
        slots: u32,
    ) -> Result<(Decision, u32), RedisCheckError> {
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.redis.get().await?;
        let (allowed, count, reset_us, retry_us, granted): (i64, i64, i64, i64, i64) = self
            .script
            .key(self.names.rate_limit(subject))
            .arg(limit)
            .arg(window_us)
            .arg(slots.max(1))
            .arg(sub_window_us(window_us))
            .invoke_async(&mut conn)
            .await
            .inspect_err(|_| self.redis.reset())?;
        let count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
        let decision = Decision {
            allowed: allowed == 1,
            limit,
            remaining: limit.saturating_sub(count),
            reset_after: micros(reset_us),
            retry_after: (allowed != 1).then(|| micros(retry_us)),
            source: LimitSource::Redis,
        };
        Ok((decision, u32::try_from(granted.max(0)).unwrap_or(0)))
    }

    /// A check ran out of time: the connection may be stuck, so the next one starts afresh.
    pub(super) fn reset(&self) {
        self.redis.reset();
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
