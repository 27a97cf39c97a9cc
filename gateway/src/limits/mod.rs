//! Rate limits: across every gateway instance through one atomic Redis script, with a local
//! per-process limiter when Redis is unreachable or slow.
//!
//! One [`RateLimiter::check`] is at most one Redis round trip (`EVALSHA` of a script that
//! keeps a counter per twentieth of the window, see [`window`]). The script reads the time
//! from Redis itself, so the clocks of the gateway instances do not matter, and across every
//! instance it admits at most `limit` requests in any span of `window`, with no double burst
//! at the edge of a fixed window. Counters instead of a log of every request err on the safe
//! side only: a request may be refused when the `limit` requests before it span up to a
//! twentieth more than `window`.
//! A busy key whose limit is far above one request reserves slots in blocks and spends them
//! locally ([`lease`]): one round trip per block, exact to within a block of 1% of the limit.
//!
//! When Redis fails or takes longer than the timeout, the check falls back to a local
//! `governor` limiter ([`local`]) and Redis is marked unhealthy ([`health`]); while unhealthy,
//! requests go straight to the local limiter and one request at a time probes Redis again,
//! so the gateway returns to exact limits by itself, without a restart, and no request waits
//! on a dead Redis longer than the timeout.

mod health;
mod lease;
mod local;
mod window;

use std::{sync::Arc, time::Duration};

use uuid::Uuid;
use wrapx_core::cache::CacheNames;

use self::{
    health::Health,
    lease::{Leases, Next},
    local::LocalLimiters,
    window::SlidingWindow,
};

/// The answer to one check, with what the `x-ratelimit-*` and `retry-after` headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The configured limit (`x-ratelimit-limit-requests`).
    pub limit: u32,
    /// Requests still allowed in the current window, this one counted
    /// (`x-ratelimit-remaining-requests`).
    pub remaining: u32,
    /// Until the window is back to its initial state, every admitted request in it expired
    /// (`x-ratelimit-reset-requests`).
    pub reset_after: Duration,
    /// For a refused request: until the next request can be admitted (`retry-after`).
    pub retry_after: Option<Duration>,
    pub source: LimitSource,
}

/// Which limiter decided: only [`LimitSource::Redis`] is exact across instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    Redis,
    /// This process's own limiter, because Redis was unreachable or slow.
    Local,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
        }
    }
}

/// Cheap to clone: every clone shares the script, the health state and the local limiters.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: SlidingWindow,
    leases: Leases,
    local: LocalLimiters,
    health: Health,
    /// The bound on one Redis check, connecting included.
    redis_timeout: Duration,
}

impl RateLimiter {
    /// `fallback_rate_per_second`, when not 0, caps the local limiter's rate (which is
    /// otherwise the configured `limit/window`).
    pub fn new(
        redis: deadpool_redis::Pool,
        names: CacheNames,
        fallback_rate_per_second: u32,
        redis_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis: SlidingWindow::new(redis, names),
                leases: Leases::default(),
                local: LocalLimiters::new(fallback_rate_per_second),
                health: Health::new(),
                redis_timeout,
            }),
        }
    }

    /// `subject`: the API key id (limits apply per key, with its wrapped API's rate_limits
    /// row). Never waits longer than twice the Redis timeout (a wait for another request's
    /// reservation, then its own check).
    pub async fn check(&self, subject: Uuid, limit: u32, window: Duration) -> Decision {
        let inner = &*self.inner;
        // A slot of this key's lease; or the block another request is reserving, waited for
        // (in all at most the Redis timeout); or a reservation of its own.
        let mut slots = 1;
        let wait_until = tokio::time::Instant::now() + inner.redis_timeout;
        loop {
            if let Some(taken) = inner.leases.take(subject, limit, window) {
                if let Some(ahead) = taken.ahead {
                    self.reserve_ahead(subject, limit, window, ahead);
                }
                return taken.decision;
            }
            match inner.leases.next(subject, limit, window) {
                Next::Reserve(n) => {
                    slots = n;
                    break;
                }
                Next::Wait(mut ended) => {
                    if tokio::time::timeout_at(wait_until, ended.changed())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        match self.reserve(subject, limit, window, slots).await {
            Some((decision, _)) if !decision.allowed => decision,
            Some((decision, granted)) => inner
                .leases
                .store(subject, window, slots, granted, decision),
            None => {
                crate::metrics::limit_fallback();
                inner.local.check(subject, limit, window)
            }
        }
    }

    /// Reserves the next block of a busy key while the rest of its lease is handed out.
    fn reserve_ahead(&self, subject: Uuid, limit: u32, window: Duration, slots: u32) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Some((decision, granted)) = this.reserve(subject, limit, window, slots).await {
                if decision.allowed {
                    this.inner
                        .leases
                        .store_ahead(subject, window, slots, granted, decision);
                }
            }
        });
    }

    /// One Redis check reserving `slots`: Redis's decision and the slots it granted, or `None`
    /// when Redis is unhealthy, failed or was too slow. A refusal or a failure ends the
    /// reservation in the lease, so that requests waiting for it go on.
    async fn reserve(
        &self,
        subject: Uuid,
        limit: u32,
        window: Duration,
        slots: u32,
    ) -> Option<(Decision, u32)> {
        let inner = &*self.inner;
        if !inner.health.should_try_redis() {
            inner.leases.abandon(subject, slots);
            return None;
        }
        let started = std::time::Instant::now();
        let attempt = tokio::time::timeout(
            inner.redis_timeout,
            inner.redis.check(subject, limit, window, slots),
        )
        .await;
        match attempt {
            Ok(Ok((decision, granted))) => {
                crate::metrics::redis(crate::metrics::RedisOp::RateLimit, started.elapsed());
                inner.health.record_success();
                if !decision.allowed {
                    inner.leases.abandon(subject, slots);
                }
                Some((decision, granted))
            }
            Ok(Err(error)) => {
                inner.leases.abandon(subject, slots);
                inner.health.record_failure(&error);
                None
            }
            Err(_elapsed) => {
                inner.leases.abandon(subject, slots);
                inner.redis.reset();
                inner
                    .health
                    .record_failure(&format!("no answer within {:?}", inner.redis_timeout));
                None
            }
        }
    }

    /// False from the first failed or slow Redis check until one succeeds again.
    pub fn redis_healthy(&self) -> bool {
        self.inner.health.is_healthy()
    }
}
