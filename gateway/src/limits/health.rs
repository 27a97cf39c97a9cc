//! Whether Redis answers, and when to probe it again after it did not.

use std::{
    fmt::Display,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How often one request probes an unhealthy Redis. Between probes every check is local, so
/// an outage costs one timeout per interval, not one per request.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

pub(super) struct Health {
    healthy: AtomicBool,
    /// Milliseconds since `epoch` before which no probe is sent.
    next_probe_ms: AtomicU64,
    epoch: Instant,
}

impl Health {
    pub(super) fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// True when this check should go to Redis: always while healthy; otherwise for exactly
    /// one caller per probe interval (the compare-exchange elects it).
    pub(super) fn should_try_redis(&self) -> bool {
        if self.is_healthy() {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + PROBE_INTERVAL.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub(super) fn record_success(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("Redis answers again: rate limits are exact across instances again");
        }
    }

    pub(super) fn record_failure(&self, error: &dyn Display) {
        self.next_probe_ms.store(
            self.now_ms() + PROBE_INTERVAL.as_millis() as u64,
            Ordering::Relaxed,
        );
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %error, "Redis failed a rate-limit check: falling back to the local limiter");
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
