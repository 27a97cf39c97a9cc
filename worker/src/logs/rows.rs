//! Building the rows of a batch: one array per `api_logs` column for a single
//! `INSERT … SELECT FROM UNNEST … ON CONFLICT (request_id) DO NOTHING`, with text and JSON made
//! fit for PostgreSQL, and what the insert returns turned into billing's [`Inserted`].

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;
use wrapx_core::events::{RequestEvent, RequestOutcome, UsageSource};

use crate::{billing::Inserted, Worker};

/// What the insert returns for each row it inserted.
#[derive(sqlx::FromRow)]
struct InsertedRow {
    user_id: Uuid,
    wrapped_api_id: Uuid,
    outcome: String,
    tokens_used: i32,
    cost: Decimal,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The batch as one array per column, for `INSERT … SELECT FROM UNNEST(…)`. The JSON documents
/// are borrowed from the events unless they had to be cleaned: copying and dropping every
/// document was a visible share of the worker's CPU.
#[derive(Default)]
pub(super) struct Columns<'a> {
    id: Vec<Uuid>,
    request_id: Vec<Uuid>,
    wrapped_api_id: Vec<Uuid>,
    api_key_id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    provider: Vec<&'static str>,
    model: Vec<String>,
    status: Vec<i16>,
    outcome: Vec<&'static str>,
    stream: Vec<bool>,
    latency_ms: Vec<i32>,
    ttfb_ms: Vec<Option<i32>>,
    prompt_tokens: Vec<i32>,
    completion_tokens: Vec<i32>,
    reasoning_tokens: Vec<i32>,
    tokens_used: Vec<i32>,
    usage_source: Vec<&'static str>,
    cost: Vec<Decimal>,
    request_data: Vec<Option<Cow<'a, Value>>>,
    response_data: Vec<Option<Cow<'a, Value>>>,
    error: Vec<Option<String>>,
    config_version: Vec<Option<i32>>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
}

const INSERT: &str = "
INSERT INTO api_logs (id, request_id, wrapped_api_id, api_key_id, user_id, provider, model, status,
    outcome, stream, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, reasoning_tokens,
    tokens_used, usage_source, cost, request_data, response_data, error, config_version, created_at)
SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[],
    $7::text[], $8::int2[], $9::text[], $10::bool[], $11::int4[], $12::int4[], $13::int4[],
    $14::int4[], $15::int4[], $16::int4[], $17::text[], $18::numeric[], $19::jsonb[], $20::jsonb[],
    $21::text[], $22::int4[], $23::timestamptz[])
ON CONFLICT (request_id) DO NOTHING
RETURNING user_id, wrapped_api_id, outcome, tokens_used, cost, created_at";

impl<'a> Columns<'a> {
    pub(super) fn new(worker: &Worker, events: &[&'a RequestEvent]) -> Self {
        let mut c = Columns::default();
        for e in events {
            let found = worker.pricing.price(&e.model);
            if found.is_default {
                worker.flag_default_price(&e.model);
            }
            let cost = found
                .price
                .cost(e.usage.prompt_tokens, e.usage.completion_tokens);
            c.id.push(Uuid::now_v7());
            c.request_id.push(e.request_id);
            c.wrapped_api_id.push(e.wrapped_api_id);
            c.api_key_id.push(e.key_id);
            c.user_id.push(e.user_id);
            c.provider.push(e.provider.as_str());
            c.model.push(clean_text(&e.model));
            c.status.push(status_column(e.status));
            c.outcome.push(e.outcome.as_str());
            c.stream.push(e.stream);
            c.latency_ms.push(clamp(e.latency_ms));
            c.ttfb_ms.push(e.ttfb_ms.map(clamp));
            c.prompt_tokens.push(clamp(e.usage.prompt_tokens));
            c.completion_tokens.push(clamp(e.usage.completion_tokens));
            c.reasoning_tokens.push(clamp(e.usage.reasoning_tokens));
            c.tokens_used
                .push(i32::try_from(e.usage.total()).unwrap_or(i32::MAX));
            c.usage_source.push(match e.usage.source {
                UsageSource::Reported => "reported",
                UsageSource::Counted => "counted",
                UsageSource::None => "none",
            });
            c.cost.push(cost);
            c.request_data.push(clean_json(&e.request_data));
            c.response_data.push(clean_json(&e.response_data));
            c.error.push(e.error.as_deref().map(clean_text));
            c.config_version.push(e.config_version);
            c.created_at.push(e.occurred_at);
        }
        c
    }

    pub(super) async fn insert(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<Vec<Inserted>> {
        let rows: Vec<InsertedRow> = sqlx::query_as(INSERT)
            .bind(&self.id)
            .bind(&self.request_id)
            .bind(&self.wrapped_api_id)
            .bind(&self.api_key_id)
            .bind(&self.user_id)
            .bind(&self.provider)
            .bind(&self.model)
            .bind(&self.status)
            .bind(&self.outcome)
            .bind(&self.stream)
            .bind(&self.latency_ms)
            .bind(&self.ttfb_ms)
            .bind(&self.prompt_tokens)
            .bind(&self.completion_tokens)
            .bind(&self.reasoning_tokens)
            .bind(&self.tokens_used)
            .bind(&self.usage_source)
            .bind(&self.cost)
            .bind(borrowed(&self.request_data))
            .bind(borrowed(&self.response_data))
            .bind(&self.error)
            .bind(&self.config_version)
            .bind(&self.created_at)
            .fetch_all(tx)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |InsertedRow {
                     user_id,
                     wrapped_api_id,
                     outcome,
                     tokens_used: tokens,
                     cost,
                     created_at: at,
                 }| Inserted {
                    user_id,
                    wrapped_api_id,
                    // Requests the gateway refused before the provider do not count against
                    // the plan's quota or the rate-limit view.
                    billable: outcome != RequestOutcome::RateLimited.as_str()
                        && outcome != RequestOutcome::Rejected.as_str(),
                    tokens: i64::from(tokens),
                    cost,
                    at,
                },
            )
            .collect())
    }
}

/// The `int2` of an HTTP status, which `parse` has checked is in 100..=599.
fn status_column(status: u16) -> i16 {
    i16::try_from(status).unwrap_or_else(|_| {
        wrapx_core::never!("status {status} passed the parse check");
        // The row is kept, with the column's largest value, rather than the request's log lost.
        i16::MAX
    })
}

fn clamp(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// PostgreSQL text cannot hold NUL; a log row is worth more than that byte.
fn clean_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

/// JSON null becomes SQL NULL; NUL characters (which jsonb refuses) become U+FFFD.
fn clean_json(value: &Value) -> Option<Cow<'_, Value>> {
    if value.is_null() {
        return None;
    }
    if !has_nul(value) {
        return Some(Cow::Borrowed(value));
    }
    let mut copy = value.clone();
    scrub(&mut copy);
    Some(Cow::Owned(copy))
}

/// A jsonb column as sqlx binds it.
fn borrowed<'v>(column: &'v [Option<Cow<'_, Value>>]) -> Vec<Option<&'v Value>> {
    column.iter().map(|v| v.as_deref()).collect()
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => *s = clean_text(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            let taken = std::mem::take(map);
            for (k, mut v) in taken {
                scrub(&mut v);
                map.insert(clean_text(&k), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn nul_characters_are_replaced() {
        let v = serde_json::json!({"a\u{0}": ["x\u{0}y", 1, {"b": "\u{0}"}]});
        let cleaned = clean_json(&v).unwrap().into_owned();
        assert_eq!(
            cleaned,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", 1, {"b": "\u{FFFD}"}]})
        );
        assert_eq!(clean_json(&Value::Null), None);
        assert_eq!(clean_text("ok"), "ok");
    }
}
