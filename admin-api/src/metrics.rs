//! The admin API's metrics: described, and each at zero from the start.

use crate::{events::FAILED_METRIC, invalidate::FAILURES_METRIC, server::REQUESTS_METRIC};

/// Makes every metric exist from the start, each status class of the contract's request
/// counter included: a `rate()` over a series that appears at its first event misses that
/// event, and an alert sees no data where it should see zero.
pub fn describe() {
    metrics::describe_counter!(REQUESTS_METRIC, "Admin API requests, by status class");
    metrics::describe_counter!(
        FAILED_METRIC,
        "Admin events the broker did not confirm (dropped)"
    );
    metrics::describe_counter!(
        FAILURES_METRIC,
        "Cache invalidations that could not be delivered to Redis"
    );
    for status in ["2xx", "4xx", "5xx"] {
        metrics::counter!(REQUESTS_METRIC, "status" => status).increment(0);
    }
    metrics::counter!(FAILED_METRIC).increment(0);
    metrics::counter!(FAILURES_METRIC).increment(0);
}
