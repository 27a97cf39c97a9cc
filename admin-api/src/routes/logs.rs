//! Request logs of a wrapped API (paged, filtered) and its usage per day, aggregated in SQL.

use axum::{extract::State, Json};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{PathParams, QueryParams},
    pagination::{page, whole, HasId, Page, DEFAULT_LIMIT, MAX_LIMIT},
    routes::owned_api,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct LogEntry {
    pub id: Uuid,
    pub request_id: Uuid,
    pub api_key_id: Uuid,
    pub provider: String,
    pub model: String,
    pub status: i16,
    pub outcome: String,
    pub stream: bool,
    pub latency_ms: i32,
    pub ttfb_ms: Option<i32>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub reasoning_tokens: i32,
    pub tokens_used: i32,
    #[schema(value_type = String)]
    pub cost: Decimal,
    #[schema(value_type = Option<Object>)]
    pub request_data: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub response_data: Option<serde_json::Value>,
    pub error: Option<String>,
    pub config_version: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl HasId for LogEntry {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only requests at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only requests before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only requests answered with this HTTP status.
    pub status: Option<i16>,
    /// 1 to 100; 50 when absent.
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/logs", tag = "logs", security(("bearer" = [])), params(("id" = Uuid, Path), LogParams),
    responses((status = 200, body = Page<LogEntry>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<LogParams>,
) -> ApiResult<Json<Page<LogEntry>>> {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if p.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(ApiError::BadRequest(
            "status must be an HTTP status, 100 to 599".into(),
        ));
    }
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(
        "SELECT id, request_id, api_key_id, provider, model, status, outcome, stream, latency_ms, ttfb_ms, \
         prompt_tokens, completion_tokens, reasoning_tokens, tokens_used, cost, request_data, response_data, error, \
         config_version, created_at FROM api_logs \
         WHERE wrapped_api_id = $1 AND user_id = $2 AND ($3::uuid IS NULL OR id < $3) \
           AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5) \
           AND ($6::smallint IS NULL OR status = $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(p.from)
    .bind(p.to)
    .bind(p.status)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UsageDay {
    /// The UTC day.
    pub date: NaiveDate,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub tokens: i64,
    #[schema(value_type = String)]
    pub cost: Decimal,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Start (RFC 3339); 30 days ago when absent.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), exclusive; now when absent.
    pub to: Option<DateTime<Utc>>,
}

/// The longest span one usage query may cover.
const MAX_USAGE_DAYS: i64 = 366;

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/usage", tag = "logs", security(("bearer" = [])), params(("id" = Uuid, Path), UsageParams),
    responses((status = 200, body = Page<UsageDay>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<UsageParams>,
) -> ApiResult<Json<Page<UsageDay>>> {
    let to = p.to.unwrap_or_else(Utc::now);
    let from = p.from.unwrap_or(to - Duration::days(30));
    if from > to || to - from > Duration::days(MAX_USAGE_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "from must be before to, at most {MAX_USAGE_DAYS} days apart"
        )));
    }
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS date, count(*) AS requests, \
         COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, \
         COALESCE(sum(tokens_used), 0)::bigint AS tokens, COALESCE(sum(cost), 0) AS cost \
         FROM api_logs WHERE wrapped_api_id = $1 AND user_id = $2 AND created_at >= $3 AND created_at < $4 \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .bind(from)
    .bind(to)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(whole(rows)))
}
