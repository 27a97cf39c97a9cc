//! Billing, quotas and the `rate_limits` view counters, kept current from the log rows a batch
//! actually inserted, in the batch's transaction: one upsert for all the batch's accounts
//! (aggregated per account and period), one update for all its wrapped APIs.
//!
//! Periods are calendar months in UTC, taken from each request's own time, so a late event
//! counts in the month it happened. An account's first event of a period creates the period's
//! row with the plan of its previous period (`free` when there is none) and that plan's quota.
//! Crossing 80% and 100% of the quota raises a notification (once per period, by its
//! `dedup_key`) and a `usage.quota_warning` / `usage.quota_exceeded` event for webhooks.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wrapx_core::{
    amqp::EVENTS_EXCHANGE,
    events::{AdminEvent, Event, EventType},
    pricing::Pricing,
    types::PlanType,
};

use crate::{notifications, publish::Outgoing};

/// One `api_logs` row the batch inserted (not one that was already there).
#[derive(Debug, Clone)]
pub struct Inserted {
    pub user_id: Uuid,
    pub wrapped_api_id: Uuid,
    /// Counts as a request of the plan and of the rate-limit view.
    pub billable: bool,
    pub tokens: i64,
    pub cost: Decimal,
    pub at: DateTime<Utc>,
}

/// The first instant of the month of `at`, and of the next month; `None` only in the
/// calendar's last month (December of year 262143), which has no next one. The log writer
/// refuses such events as poison, so billing never sees one.
pub fn period_of(at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = at
        .date_naive()
        .with_day(1)?
        .and_time(NaiveTime::MIN)
        .and_utc();
    let end = start.checked_add_months(Months::new(1))?;
    Some((start, end))
}

/// A threshold of the monthly quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLevel {
    /// 80%.
    Warning,
    /// 100%.
    Exceeded,
}

impl QuotaLevel {
    fn event_type(self) -> EventType {
        match self {
            Self::Warning => EventType::UsageQuotaWarning,
            Self::Exceeded => EventType::UsageQuotaExceeded,
        }
    }
}

/// A threshold an account crossed in this batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub user_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub level: QuotaLevel,
    pub plan: String,
    pub requests: i64,
    pub quota: i64,
}

/// Which thresholds a count moving from `before` to `after` crosses, for a quota.
pub fn crossed(before: i64, after: i64, quota: i64) -> Vec<QuotaLevel> {
    // 80% rounded up: a quota of 10 warns at the 8th request, of 11 at the 9th.
    let warning = (quota * 4 + 4) / 5;
    let mut levels = Vec::new();
    if before < warning && after >= warning {
        levels.push(QuotaLevel::Warning);
    }
    if before < quota && after >= quota {
        levels.push(QuotaLevel::Exceeded);
    }
    levels
}

const UPSERT_BILLING: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],
                         $5::numeric[], $6::int8[], $7::int8[])
        AS t(id, user_id, period_start, expires_at, amount, requests, tokens)
)
INSERT INTO billing (id, user_id, plan_type, status, amount, period_start, requests_count,
                     tokens_count, monthly_quota_requests, expires_at)
SELECT i.id, i.user_id, p.plan_type, 'active', i.amount, i.period_start, i.requests, i.tokens,
       q.quota, i.expires_at
FROM input i
CROSS JOIN LATERAL (
    SELECT COALESCE((SELECT b.plan_type FROM billing b
                     WHERE b.user_id = i.user_id AND b.period_start < i.period_start
                     ORDER BY b.period_start DESC LIMIT 1), 'free') AS plan_type
) p
LEFT JOIN UNNEST($8::text[], $9::int8[]) AS q(plan, quota) ON q.plan = p.plan_type
-- api_logs outlive their account; billing rows cannot.
WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = i.user_id)
ORDER BY i.user_id, i.period_start
ON CONFLICT (user_id, period_start) DO UPDATE SET
    amount = billing.amount + EXCLUDED.amount,
    requests_count = billing.requests_count + EXCLUDED.requests_count,
    tokens_count = billing.tokens_count + EXCLUDED.tokens_count
RETURNING user_id, period_start, plan_type, requests_count, monthly_quota_requests";

const UPDATE_RATE_LIMITS: &str = "
UPDATE rate_limits r SET
    requests_count = CASE WHEN r.reset_at IS NULL OR r.reset_at <= t.last_at
                          THEN t.n ELSE r.requests_count + t.n END,
    reset_at = CASE WHEN r.reset_at IS NULL OR r.reset_at <= t.last_at
                    THEN to_timestamp((floor(extract(epoch FROM t.last_at) / r.window_seconds) + 1)
                                      * r.window_seconds)
                    ELSE r.reset_at END
FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[]) AS t(api, n, last_at)
WHERE r.wrapped_api_id = t.api";

/// A billing row after the batch's upsert.
#[derive(sqlx::FromRow)]
struct BillingRow {
    user_id: Uuid,
    period_start: DateTime<Utc>,
    plan_type: String,
    requests_count: i64,
    monthly_quota_requests: Option<i64>,
}

#[derive(Default)]
struct Totals {
    /// The end of the period, when the billing row expires.
    expires_at: DateTime<Utc>,
    amount: Decimal,
    requests: i64,
    tokens: i64,
}

/// Adds the inserted rows to billing and the rate-limit counters; returns the quota
/// thresholds crossed.
pub async fn apply(
    tx: &mut sqlx::PgConnection,
    pricing: &Pricing,
    rows: &[Inserted],
) -> sqlx::Result<Vec<Crossing>> {
    // Sorted by account, so concurrent workers lock billing rows in the same order.
    let mut per_account: BTreeMap<(Uuid, DateTime<Utc>), Totals> = BTreeMap::new();
    let mut per_api: BTreeMap<Uuid, (i64, DateTime<Utc>)> = BTreeMap::new();
    for row in rows {
        let Some((start, end)) = period_of(row.at) else {
            // Without a period there is no billing row to add to: the log row stays, unbilled.
            wrapx_core::never!("request at {} has no billing period", row.at);
            continue;
        };
        let totals = per_account.entry((row.user_id, start)).or_default();
        totals.expires_at = end;
        totals.amount += row.cost;
        totals.tokens += row.tokens;
        if row.billable {
            totals.requests += 1;
            let api = per_api.entry(row.wrapped_api_id).or_insert((0, row.at));
            api.0 += 1;
            api.1 = api.1.max(row.at);
        }
    }

    let mut ids = Vec::with_capacity(per_account.len());
    let mut users = Vec::with_capacity(per_account.len());
    let mut starts = Vec::with_capacity(per_account.len());
    let mut expiries = Vec::with_capacity(per_account.len());
    let mut amounts = Vec::with_capacity(per_account.len());
    let mut requests = Vec::with_capacity(per_account.len());
    let mut tokens = Vec::with_capacity(per_account.len());
    for ((user, start), totals) in &per_account {
        ids.push(Uuid::now_v7());
        users.push(*user);
        starts.push(*start);
        expiries.push(totals.expires_at);
        amounts.push(totals.amount);
        requests.push(totals.requests);
        tokens.push(totals.tokens);
    }
    let (plan_names, plan_quotas): (Vec<String>, Vec<Option<i64>>) = pricing
        .plans()
        .map(|(name, plan)| (name.to_owned(), plan.monthly_quota_requests))
        .unzip();
    let updated: Vec<BillingRow> = sqlx::query_as(UPSERT_BILLING)
        .bind(&ids)
        .bind(&users)
        .bind(&starts)
        .bind(&expiries)
        .bind(&amounts)
        .bind(&requests)
        .bind(&tokens)
        .bind(&plan_names)
        .bind(&plan_quotas)
        .fetch_all(&mut *tx)
        .await?;

    let mut crossings = Vec::new();
    for BillingRow {
        user_id,
        period_start,
        plan_type: plan,
        requests_count: after,
        monthly_quota_requests: row_quota,
    } in updated
    {
        // The upsert returns only rows of the batch's (account, period) pairs.
        let Some(added) = per_account
            .get(&(user_id, period_start))
            .map(|t| t.requests)
        else {
            wrapx_core::never!("billing returned a period the batch did not write");
            continue; // no crossing raised rather than one computed from a wrong count
        };
        // The row's own quota wins (an operator may have set one); else the plan's.
        let quota = row_quota.or_else(|| plan_quota(pricing, &plan));
        let Some(quota) = quota else { continue };
        for level in crossed(after - added, after, quota) {
            crossings.push(Crossing {
                user_id,
                period_start,
                level,
                plan: plan.clone(),
                requests: after,
                quota,
            });
        }
    }

    if !per_api.is_empty() {
        let (apis, counts): (Vec<Uuid>, Vec<(i64, DateTime<Utc>)>) = per_api.into_iter().unzip();
        let (n, last): (Vec<i64>, Vec<DateTime<Utc>>) = counts.into_iter().unzip();
        sqlx::query(UPDATE_RATE_LIMITS)
            .bind(&apis)
            .bind(&n)
            .bind(&last)
            .execute(&mut *tx)
            .await?;
    }
    Ok(crossings)
}

/// Raises a notification per crossing (once per period) and returns the webhook events to
/// publish for the ones raised now: one per wrapped API of the account, since webhooks
/// belong to wrapped APIs.
pub async fn raise_quota_alerts(
    tx: &mut sqlx::PgConnection,
    crossings: &[Crossing],
) -> sqlx::Result<Vec<Outgoing>> {
    let mut outgoing = Vec::new();
    for c in crossings {
        let month = c.period_start.format("%Y-%m").to_string();
        let (kind, title) = match c.level {
            QuotaLevel::Warning => (
                "quota_warning",
                format!("80% of your monthly request quota used ({month})"),
            ),
            QuotaLevel::Exceeded => (
                "quota_exceeded",
                format!("Monthly request quota reached ({month})"),
            ),
        };
        let message = format!(
            "{} of {} requests of the {} plan used in {month}.",
            c.requests, c.quota, c.plan
        );
        let data = serde_json::json!({
            "period_start": c.period_start,
            "plan_type": c.plan,
            "requests": c.requests,
            "quota": c.quota,
        });
        let raised = notifications::raise(
            &mut *tx,
            &notifications::NewNotification {
                user_id: c.user_id,
                wrapped_api_id: None,
                kind,
                title,
                message,
                metadata: data.clone(),
                dedup_key: format!("{kind}:{month}"),
            },
        )
        .await?;
        if !raised {
            continue;
        }
        let apis: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM wrapped_apis WHERE user_id = $1 ORDER BY id")
                .bind(c.user_id)
                .fetch_all(&mut *tx)
                .await?;
        for api in apis {
            let event = Event::Admin(AdminEvent {
                event_id: derived_id(&[
                    kind.as_bytes(),
                    c.user_id.as_bytes(),
                    month.as_bytes(),
                    api.as_bytes(),
                ]),
                occurred_at: Utc::now(),
                event_type: c.level.event_type(),
                user_id: c.user_id,
                wrapped_api_id: api,
                data: data.clone(),
            });
            let body = match event.to_json() {
                Ok(body) => body,
                Err(e) => {
                    // Serialising a type of our own to JSON does not fail.
                    wrapx_core::never!("a quota event does not serialise: {e}");
                    continue; // the notification stands; only its webhook event is lost
                }
            };
            outgoing.push(Outgoing {
                exchange: EVENTS_EXCHANGE,
                routing_key: event.routing_key().to_owned(),
                message_id: event.id().to_string(),
                body,
            });
        }
    }
    Ok(outgoing)
}

/// The monthly quota of a plan named in a billing row, `None` when the plan has none.
fn plan_quota(pricing: &Pricing, plan: &str) -> Option<i64> {
    // The table's CHECK admits only the product's plans, and the pricing table is refused at
    // start unless it prices every one of them.
    let Some(found) = plan.parse::<PlanType>().ok().and_then(|p| pricing.plan(p)) else {
        wrapx_core::never!("billing plan {plan:?} is not in the pricing table");
        return None; // no quota known: no alert, rather than one against a made-up quota
    };
    found.monthly_quota_requests
}

/// A UUID determined by its parts: the same cause always gets the same id, so a retried
/// publish is recognisably the same message.
pub fn derived_id(parts: &[&[u8]]) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn periods_are_utc_months() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (start, end) = period_of(at).unwrap();
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        let (start, end) = period_of(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()).unwrap();
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        // The calendar's last month has no next one, and the first month still has a period.
        assert_eq!(period_of(DateTime::<Utc>::MAX_UTC), None);
        let (start, _) = period_of(DateTime::<Utc>::MIN_UTC).unwrap();
        assert_eq!(start.month(), DateTime::<Utc>::MIN_UTC.month());
    }

    #[test]
    fn thresholds_fire_once_when_crossed() {
        use QuotaLevel::*;
        let cases: &[(i64, i64, i64, &[QuotaLevel])] = &[
            (0, 7, 10, &[]),
            (7, 8, 10, &[Warning]),
            (8, 9, 10, &[]),
            (9, 10, 10, &[Exceeded]),
            (0, 10, 10, &[Warning, Exceeded]),
            (10, 15, 10, &[]),
            (0, 8, 11, &[]),
            (8, 9, 11, &[Warning]),
        ];
        for (before, after, quota, expected) in cases {
            assert_eq!(
                crossed(*before, *after, *quota),
                expected.to_vec(),
                "{before}->{after}/{quota}"
            );
        }
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id(&[b"x", b"y"]);
        assert_eq!(a, derived_id(&[b"x", b"y"]));
        assert_ne!(a, derived_id(&[b"xy"]));
    }
}
