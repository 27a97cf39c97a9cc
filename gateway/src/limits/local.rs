//! The fallback limiter: per-subject `governor` limiters in this process, used while Redis is
//! unreachable or slow. Each instance allows a key its whole configured limit (so N instances
//! allow up to N times it), unless `gateway.fallback_rate_per_second` caps it further: a Redis
//! that is briefly slow (a burst of connections saturating the gateway's cores is enough) must
//! not turn into 429s for clients well within their limits. Bounded: limiters whose state has
//! gone back to "fresh" are swept away periodically.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    Quota,
};
use uuid::Uuid;

use super::{Decision, LimitSource};

type Keyed = governor::RateLimiter<
    Uuid,
    DefaultKeyedStateStore<Uuid>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// How often idle per-subject states are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct LocalLimiters {
    /// An extra cap on every key's local rate; none: the configured limit itself.
    fallback_rate_per_second: Option<NonZeroU32>,
    /// One keyed limiter per distinct (limit, window in ms): a keyed governor limiter has one
    /// quota, and the number of distinct limit settings is small.
    by_quota: RwLock<HashMap<(u32, u64), Arc<Keyed>>>,
    clock: DefaultClock,
    epoch: Instant,
    last_sweep_ms: AtomicU64,
}

impl LocalLimiters {
    /// `fallback_rate_per_second`: 0 for no cap beyond each key's configured limit.
    pub(super) fn new(fallback_rate_per_second: u32) -> Self {
        Self {
            fallback_rate_per_second: NonZeroU32::new(fallback_rate_per_second),
            by_quota: RwLock::new(HashMap::new()),
            clock: DefaultClock::default(),
            epoch: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn check(&self, subject: Uuid, limit: u32, window: Duration) -> Decision {
        self.maybe_sweep();
        let Some(quota) = self.quota(limit, window) else {
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: window,
                retry_after: Some(window),
                source: LimitSource::Local,
            };
        };
        let limiter = self.limiter(limit, window, quota);
        let period = quota.replenish_interval();
        let burst = quota.burst_size().get();
        match limiter.check_key(&subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_after: period * burst.saturating_sub(remaining),
                    retry_after: None,
                    source: LimitSource::Local,
                }
            }
            Err(not_until) => {
                let retry = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after: retry + period * burst.saturating_sub(1),
                    retry_after: Some(retry),
                    source: LimitSource::Local,
                }
            }
        }
    }

    /// The local rate is the configured `limit/window` and the burst the limit, both capped by
    /// the fallback rate when one is set (the burst at one second of it). None for a zero
    /// limit.
    fn quota(&self, limit: u32, window: Duration) -> Option<Quota> {
        let configured = window.checked_div(limit).unwrap_or(window);
        let (burst, period) = match self.fallback_rate_per_second {
            Some(cap) => (
                limit.min(cap.get()),
                configured.max(Duration::from_secs(1) / cap.get()),
            ),
            None => (limit, configured),
        };
        let burst = NonZeroU32::new(burst)?;
        Some(Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst))
    }

    fn limiter(&self, limit: u32, window: Duration, quota: Quota) -> Arc<Keyed> {
        let id = (limit, u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        if let Some(found) = self
            .by_quota
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Arc::clone(found);
        }
        let mut map = self.by_quota.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(id).or_insert_with(|| {
            Arc::new(
                governor::RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            )
        }))
    }

    /// Drops the states that are indistinguishable from fresh ones, and the limiters left
    /// empty, at most once per sweep interval (the caller that wins the exchange sweeps).
    fn maybe_sweep(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now < last + SWEEP_INTERVAL.as_millis() as u64
            || self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut map = self.by_quota.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncapped_the_local_limit_is_the_configured_one() {
        let local = LocalLimiters::new(0);
        let subject = Uuid::now_v7();
        let window = Duration::from_secs(60);
        for _ in 0..1000 {
            assert!(local.check(subject, 1000, window).allowed);
        }
        let refused = local.check(subject, 1000, window);
        assert!(!refused.allowed);
        assert!(refused
            .retry_after
            .is_some_and(|r| r > Duration::from_millis(50)));
        // A huge limit is no burst of a few: a thousand at once pass.
        let big = Uuid::now_v7();
        assert!((0..1000).all(|_| local.check(big, 1_000_000_000, window).allowed));
    }

    #[test]
    fn a_cap_bounds_rate_and_burst() {
        let local = LocalLimiters::new(50);
        let subject = Uuid::now_v7();
        let allowed = (0..200)
            .filter(|_| {
                local
                    .check(subject, 1_000_000_000, Duration::from_secs(60))
                    .allowed
            })
            .count();
        assert!((50..=52).contains(&allowed), "{allowed}");
    }
}
