//! The account's plan for the current billing period (calendar months, UTC), and plan changes.
//! An account that never changed plan is on the free plan; its period row is made on demand.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::types::PlanType;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::ApiResult,
    extract::JsonBody,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Billing {
    /// free, starter, pro or enterprise.
    pub plan_type: String,
    /// active, past_due, canceled or expired.
    pub status: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub requests_count: i64,
    pub tokens_count: i64,
    pub monthly_quota_requests: Option<i64>,
    pub payment_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPlan {
    #[schema(value_type = String, example = "pro")]
    pub plan_type: PlanType,
}

const COLUMNS: &str = "plan_type, status, amount, currency, period_start, expires_at, requests_count, tokens_count, monthly_quota_requests, payment_date";
const PERIOD: &str = "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";

#[utoipa::path(get, path = "/api/v1/billing", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Billing)))]
pub async fn get(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Billing>> {
    let current: Option<Billing> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing WHERE user_id = $1 ORDER BY period_start DESC LIMIT 1"
    ))
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?;
    if let Some(b) = current {
        return Ok(Json(b));
    }
    // Nothing recorded yet: the free plan for this month, as it would be written.
    let free: Billing = sqlx::query_as(&format!(
        "SELECT 'free'::text AS plan_type, 'active'::text AS status, 0::numeric AS amount, 'USD'::text AS currency, \
         {PERIOD} AS period_start, ({PERIOD}) + interval '1 month' AS expires_at, 0::bigint AS requests_count, \
         0::bigint AS tokens_count, NULL::bigint AS monthly_quota_requests, NULL::timestamptz AS payment_date"
    ))
    .fetch_one(&state.db)
    .await?;
    Ok(Json(free))
}

#[utoipa::path(put, path = "/api/v1/billing/plan", tag = "billing", security(("bearer" = [])), request_body = PutPlan,
    responses((status = 200, body = Billing), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_plan(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<PutPlan>,
) -> ApiResult<Json<Billing>> {
    let mut tx = state.db.begin().await?;
    let billing: Billing = sqlx::query_as(&format!(
        "INSERT INTO billing (id, user_id, plan_type, status, period_start, expires_at) \
         VALUES ($1, $2, $3, 'active', {PERIOD}, ({PERIOD}) + interval '1 month') \
         ON CONFLICT (user_id, period_start) DO UPDATE SET plan_type = EXCLUDED.plan_type \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.user_id)
    .bind(body.plan_type.as_str())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "billing.plan_changed",
        "billing",
        None,
        serde_json::json!({"fields": ["plan_type"], "plan_type": body.plan_type.as_str()}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(billing))
}
