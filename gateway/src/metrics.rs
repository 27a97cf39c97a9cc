//! The gateway's rows of the contract's metrics table, with their exact names and low-
//! cardinality labels (status class, provider kind, stream yes/no; never a key or an id).

use std::time::Duration;

use wrapx_core::{events::Usage, telemetry::Buckets, types::ProviderKind};

pub const REQUESTS_TOTAL: &str = "wrapx_gateway_requests_total";
pub const REQUEST_DURATION: &str = "wrapx_gateway_request_duration_seconds";
pub const UPSTREAM_TTFB: &str = "wrapx_gateway_upstream_ttfb_seconds";
pub const OVERHEAD: &str = "wrapx_gateway_overhead_seconds";
pub const TOKENS_TOTAL: &str = "wrapx_gateway_tokens_total";
pub const RATE_LIMITED_TOTAL: &str = "wrapx_gateway_rate_limited_total";
pub const EVENTS_SPOOLED: &str = "wrapx_gateway_events_spooled";
/// Beyond the contract, for operators: where key records were found (the cache hit ratio is
/// `source="memory"` over all), and how long Redis takes to answer the hot path.
pub const KEY_LOOKUPS_TOTAL: &str = "wrapx_gateway_key_lookups_total";
pub const REDIS_DURATION: &str = "wrapx_gateway_redis_seconds";
/// Rate-limit checks answered by the local limiter because Redis was unreachable or slow.
pub const LIMIT_FALLBACK_TOTAL: &str = "wrapx_gateway_rate_limit_fallback_total";
/// Connections closed because a request head did not arrive within its deadline.
pub const HEAD_TIMEOUTS_TOTAL: &str = "wrapx_gateway_head_timeouts_total";
/// Upstream attempts by what followed them (routing).
pub const UPSTREAM_ATTEMPTS_TOTAL: &str = "wrapx_gateway_upstream_attempts_total";
/// Routing targets this instance put to rest.
pub const TARGET_COOLDOWNS_TOTAL: &str = "wrapx_gateway_target_cooldowns_total";

/// What followed an upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Its answer went to the client.
    Ok,
    /// It failed; the same target was tried again.
    Retried,
    /// It failed; another target was tried.
    FellBack,
    /// It failed and was the last one allowed.
    Exhausted,
}

impl AttemptOutcome {
    const ALL: [Self; 4] = [Self::Ok, Self::Retried, Self::FellBack, Self::Exhausted];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retried => "retried",
            Self::FellBack => "fell_back",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Where a key record was found.
#[derive(Debug, Clone, Copy)]
pub enum LookupSource {
    Memory,
    Redis,
    Database,
}

impl LookupSource {
    fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Database => "database",
        }
    }
}

/// The Redis calls of the hot path.
#[derive(Debug, Clone, Copy)]
pub enum RedisOp {
    /// A key or wrapped API record, after an in-process cache miss.
    Lookup,
    RateLimit,
}

impl RedisOp {
    fn label(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::RateLimit => "rate_limit",
        }
    }
}

/// Buckets per quantity: whole requests run up to minutes (streams), the gateway's own time is
/// microseconds to milliseconds.
pub fn buckets() -> Vec<Buckets<'static>> {
    const LONG: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ];
    const OWN: &[f64] = &[
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    ];
    vec![
        (REQUEST_DURATION, LONG),
        (UPSTREAM_TTFB, LONG),
        (OVERHEAD, OWN),
        (REDIS_DURATION, OWN),
    ]
}

/// `2xx`, `4xx`, …; `none` when the client got no status.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// One finished request.
pub fn request(
    status: u16,
    provider: &'static str,
    stream: bool,
    total: Duration,
    ttfb: Option<Duration>,
    overhead: Duration,
    usage: &Usage,
) {
    let stream = if stream { "true" } else { "false" };
    metrics::counter!(REQUESTS_TOTAL, "status" => status_class(status), "provider" => provider, "stream" => stream).increment(1);
    metrics::histogram!(REQUEST_DURATION).record(total.as_secs_f64());
    if let Some(ttfb) = ttfb {
        metrics::histogram!(UPSTREAM_TTFB).record(ttfb.as_secs_f64());
    }
    metrics::histogram!(OVERHEAD).record(overhead.as_secs_f64());
    if usage.prompt_tokens > 0 {
        metrics::counter!(TOKENS_TOTAL, "kind" => "prompt")
            .increment(u64::from(usage.prompt_tokens));
    }
    if usage.completion_tokens > 0 {
        metrics::counter!(TOKENS_TOTAL, "kind" => "completion")
            .increment(u64::from(usage.completion_tokens));
    }
}

pub fn key_lookup(source: LookupSource) {
    metrics::counter!(KEY_LOOKUPS_TOTAL, "source" => source.label()).increment(1);
}

/// One Redis round trip that answered (timeouts and errors are not timed: they end at the
/// configured timeout and show as fallbacks and cold lookups instead).
pub fn redis(op: RedisOp, took: Duration) {
    metrics::histogram!(REDIS_DURATION, "op" => op.label()).record(took.as_secs_f64());
}

pub fn limit_fallback() {
    metrics::counter!(LIMIT_FALLBACK_TOTAL).increment(1);
}

pub fn head_timeout() {
    metrics::counter!(HEAD_TIMEOUTS_TOTAL).increment(1);
}

/// One per attempt: the handles are registered once, so the hot path pays an atomic add.
pub fn upstream_attempt(outcome: AttemptOutcome) {
    static HANDLES: std::sync::OnceLock<[metrics::Counter; 4]> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        AttemptOutcome::ALL
            .map(|o| metrics::counter!(UPSTREAM_ATTEMPTS_TOTAL, "outcome" => o.label()))
    });
    let i = AttemptOutcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(0);
    handles[i].increment(1);
}

pub fn target_cooldown() {
    metrics::counter!(TARGET_COOLDOWNS_TOTAL).increment(1);
}

pub fn rate_limited() {
    metrics::counter!(RATE_LIMITED_TOTAL).increment(1);
}

pub fn spooled(events: u64) {
    metrics::gauge!(EVENTS_SPOOLED).set(events as f64);
}

/// The status classes a request is known to end with, registered at zero from the start.
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// Makes every metric exist from the start, so dashboards and alerts see zeros, not gaps: a
/// `rate()` over a series that appears at its first event misses that event.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Gateway requests by status class, provider kind and stream"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Whole request, until the last byte"
    );
    metrics::describe_histogram!(
        UPSTREAM_TTFB,
        metrics::Unit::Seconds,
        "Until the upstream's first byte"
    );
    metrics::describe_histogram!(
        OVERHEAD,
        metrics::Unit::Seconds,
        "Time spent in the gateway itself before the upstream call"
    );
    metrics::describe_counter!(TOKENS_TOTAL, "Tokens by kind (prompt, completion)");
    metrics::describe_counter!(RATE_LIMITED_TOTAL, "Requests refused by the rate limiter");
    metrics::describe_gauge!(
        EVENTS_SPOOLED,
        "Events waiting on local disk for the broker"
    );
    metrics::describe_counter!(
        KEY_LOOKUPS_TOTAL,
        "Key records by where they were found: memory, redis or database"
    );
    metrics::describe_histogram!(
        REDIS_DURATION,
        metrics::Unit::Seconds,
        "Redis round trips of the hot path, by operation"
    );
    metrics::describe_counter!(
        LIMIT_FALLBACK_TOTAL,
        "Rate-limit checks answered locally because Redis was unreachable or slow"
    );
    metrics::describe_counter!(
        HEAD_TIMEOUTS_TOTAL,
        "Connections closed because a request head was not received in time"
    );
    metrics::describe_counter!(
        UPSTREAM_ATTEMPTS_TOTAL,
        "Upstream attempts by outcome: ok, retried, fell_back, exhausted"
    );
    metrics::describe_counter!(
        TARGET_COOLDOWNS_TOTAL,
        "Routing targets put to rest after failing too often in a row"
    );
    for outcome in AttemptOutcome::ALL {
        metrics::counter!(UPSTREAM_ATTEMPTS_TOTAL, "outcome" => outcome.label()).increment(0);
    }
    metrics::counter!(TARGET_COOLDOWNS_TOTAL).increment(0);
    metrics::counter!(RATE_LIMITED_TOTAL).increment(0);
    metrics::counter!(HEAD_TIMEOUTS_TOTAL).increment(0);
    metrics::counter!(LIMIT_FALLBACK_TOTAL).increment(0);
    for source in [
        LookupSource::Memory,
        LookupSource::Redis,
        LookupSource::Database,
    ] {
        metrics::counter!(KEY_LOOKUPS_TOTAL, "source" => source.label()).increment(0);
    }
    metrics::gauge!(EVENTS_SPOOLED).set(0.0);
    // A request without a valid key has no provider: `none`.
    let providers = ProviderKind::ALL.map(ProviderKind::as_str);
    for provider in providers.into_iter().chain(["none"]) {
        for status in STATUS_CLASSES {
            for stream in ["false", "true"] {
                metrics::counter!(REQUESTS_TOTAL, "status" => status, "provider" => provider, "stream" => stream).increment(0);
            }
        }
    }
    for kind in ["prompt", "completion"] {
        metrics::counter!(TOKENS_TOTAL, "kind" => kind).increment(0);
    }
    // A histogram registered without a sample is exported with a count of 0.
    for histogram in [REQUEST_DURATION, UPSTREAM_TTFB, OVERHEAD] {
        let _ = metrics::histogram!(histogram);
    }
    for op in [RedisOp::Lookup, RedisOp::RateLimit] {
        let _ = metrics::histogram!(REDIS_DURATION, "op" => op.label());
    }
}
