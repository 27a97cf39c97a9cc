//! The worker's Prometheus metrics, under the contract's names. Labels come from small fixed
//! sets (queue names, outcomes): never an account, key or wrapped API id.

use wrapx_core::amqp::{DELIVERIES_QUEUE, LOGS_QUEUE, WEBHOOK_EVENTS_QUEUE};

use crate::outcome::Outcome;

pub const EVENTS_TOTAL: &str = "wrapx_worker_events_total";
pub const BATCH_SECONDS: &str = "wrapx_worker_batch_seconds";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "wrapx_worker_webhook_deliveries_total";
/// Cost of the logged requests, in millionths of a US dollar (the `metrics` crate's counters
/// are integers): `rate(…) / 1e6` is dollars per second.
pub const COST_MICRO_USD_TOTAL: &str = "wrapx_worker_cost_micro_usd_total";
/// From the request's own time to the commit of its `api_logs` row: how far behind the
/// worker runs.
pub const EVENT_LAG_SECONDS: &str = "wrapx_worker_event_lag_seconds";

/// Messages waiting in each queue the worker drains, read every few seconds.
pub const QUEUE_DEPTH: &str = "wrapx_worker_queue_depth";
/// A passive queue declare: the broker's round trip as the worker sees it.
pub const BROKER_SECONDS: &str = "wrapx_worker_broker_seconds";

/// A batch takes milliseconds when healthy and seconds when PostgreSQL struggles.
pub const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Lag is milliseconds when the worker keeps up and minutes after an outage.
pub const LAG_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

pub const BUCKETS: [wrapx_core::telemetry::Buckets<'static>; 3] = [
    (BATCH_SECONDS, BATCH_BUCKETS),
    (EVENT_LAG_SECONDS, LAG_BUCKETS),
    (BROKER_SECONDS, BATCH_BUCKETS),
];

/// The queue names are the topology's fixed set, so they are fit for a label.
pub fn queue_depth(queue: &str, messages: u32) {
    metrics::gauge!(QUEUE_DEPTH, "queue" => queue.to_owned()).set(f64::from(messages));
}

pub fn broker_round_trip(took: std::time::Duration) {
    metrics::histogram!(BROKER_SECONDS).record(took.as_secs_f64());
}

/// Messages settled on `queue` with `outcome`.
pub fn events(queue: &'static str, outcome: Outcome, count: u64) {
    metrics::counter!(EVENTS_TOTAL, "queue" => queue, "outcome" => outcome.as_str())
        .increment(count);
}

/// One batch written to PostgreSQL (transaction included).
pub fn batch(seconds: f64) {
    metrics::histogram!(BATCH_SECONDS).record(seconds);
}

/// Rows just committed, as (cost in dollars, the request's time).
pub fn committed(
    rows: impl Iterator<Item = (rust_decimal::Decimal, chrono::DateTime<chrono::Utc>)>,
) {
    let now = chrono::Utc::now();
    let mut micro_usd = rust_decimal::Decimal::ZERO;
    for (cost, at) in rows {
        micro_usd += cost;
        let lag = (now - at).to_std().unwrap_or_default();
        metrics::histogram!(EVENT_LAG_SECONDS).record(lag.as_secs_f64());
    }
    micro_usd *= rust_decimal::Decimal::from(1_000_000);
    let whole = micro_usd.round().try_into().unwrap_or(0u64);
    metrics::counter!(COST_MICRO_USD_TOTAL).increment(whole);
}

/// How one webhook delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Non-2xx or timeout: scheduled on the next retry tier.
    Retried,
    /// The last tier failed too: dead-lettered and the owner notified.
    Failed,
    /// The receiver answered 410 Gone: the webhook is disabled.
    Gone,
    /// The URL resolved to an address the SSRF policy refuses.
    Refused,
    /// The webhook was deleted or disabled meanwhile: nothing sent.
    Dropped,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 6] = [
        Self::Delivered,
        Self::Retried,
        Self::Failed,
        Self::Gone,
        Self::Refused,
        Self::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Gone => "gone",
            Self::Refused => "refused",
            Self::Dropped => "dropped",
        }
    }
}

pub fn delivery(outcome: DeliveryOutcome) {
    metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome.as_str()).increment(1);
}

/// Describes the metrics and makes each exist at zero from the start, every label combination
/// known up front included: a `rate()` over a series that appears at its first event misses
/// that event, and an alert sees no data where it should see zero.
pub fn describe() {
    metrics::describe_counter!(EVENTS_TOTAL, "Messages settled, by queue and outcome");
    metrics::describe_histogram!(
        BATCH_SECONDS,
        metrics::Unit::Seconds,
        "One batch written to PostgreSQL, transaction included"
    );
    metrics::describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Webhook delivery attempts, by outcome"
    );
    metrics::describe_counter!(
        COST_MICRO_USD_TOTAL,
        "Cost of the logged requests, in millionths of a US dollar"
    );
    metrics::describe_histogram!(
        EVENT_LAG_SECONDS,
        metrics::Unit::Seconds,
        "From a request's own time to the commit of its row"
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Messages waiting in each queue the worker drains"
    );
    metrics::describe_histogram!(
        BROKER_SECONDS,
        metrics::Unit::Seconds,
        "The broker's round trip, as a passive queue declare"
    );
    for queue in [LOGS_QUEUE, WEBHOOK_EVENTS_QUEUE, DELIVERIES_QUEUE] {
        for outcome in [Outcome::Done, Outcome::Retry, Outcome::DeadLetter] {
            metrics::counter!(EVENTS_TOTAL, "queue" => queue, "outcome" => outcome.as_str())
                .increment(0);
        }
    }
    for outcome in DeliveryOutcome::ALL {
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome.as_str()).increment(0);
    }
    metrics::counter!(COST_MICRO_USD_TOTAL).increment(0);
    // A histogram registered without a sample is exported with a count of 0.
    for histogram in [BATCH_SECONDS, EVENT_LAG_SECONDS, BROKER_SECONDS] {
        let _ = metrics::histogram!(histogram);
    }
}
