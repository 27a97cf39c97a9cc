//! The exact limiter: a sliding window log in a Redis sorted set, one atomic script per check.
//!
//! The set `CacheNames::rate_limit(subject)` holds one member per admitted request, scored by
//! the Redis server's time in microseconds. A check drops the members older than the window,
//! admits the request only if fewer than `limit` remain, and sets the key to expire when its
//! newest member leaves the window. Memory per subject is bounded by its limit.

use std::time::Duration;

use deadpool_redis::Pool;
use uuid::Uuid;
use wrapx_core::cache::CacheNames;

use super::{Decision, LimitSource};
use crate::redis_conn::SharedConnection;

/// KEYS[1]: the set. ARGV: limit, window in microseconds, a unique member prefix, the slots
/// wanted (1, or a block for a lease, see `lease`). Admits as many of the slots as the limit
/// leaves room for, each a member `prefix:i`.
/// Returns {allowed (0/1), count in the window after this check, reset in µs, retry in µs or -1,
/// slots granted}.
///
/// Scores go to Redis through `string.format('%d')`: Lua's default number formatting keeps 14
/// significant digits, which would round microsecond timestamps to 100 µs.
const SCRIPT: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', key)
if limit <= 0 then
  return {0, count, window, window, 0}
end
local allowed = 0
local granted = 0
if count < limit then
  granted = math.min(tonumber(ARGV[4]), limit - count)
  local score = string.format('%d', now)
  local members = {}
  for i = 1, granted do
    members[#members + 1] = score
    members[#members + 1] = ARGV[3] .. ':' .. i
  end
  redis.call('ZADD', key, unpack(members))
  count = count + granted
  allowed = 1
end
local retry = -1
if allowed == 0 then
  -- The member whose expiry brings the count below the limit (the oldest one, unless the
  -- limit was lowered since the set filled).
  local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  retry = tonumber(entry[2]) + window - now
end
local reset = 0
if count > 0 then
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  reset = tonumber(newest[2]) + window - now
  redis.call('PEXPIRE', key, math.max(1, math.ceil(reset / 1000)))
end
return {allowed, count, reset, retry, granted}
"#;

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
            .arg(Uuid::new_v4().simple().to_string())
            .arg(slots.max(1))
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
