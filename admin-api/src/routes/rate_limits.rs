//! The rate limit of a wrapped API (requests per window), enforced by the gateways.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams},
    invalidate,
    routes::owned_api,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RateLimit {
    pub wrapped_api_id: Uuid,
    pub limit: i32,
    pub window_seconds: i32,
    /// The worker's running count in the current window, for display.
    pub requests_count: i64,
    pub reset_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRateLimit {
    /// Requests allowed per window, above 0.
    pub limit: i32,
    /// 1 to 86400.
    pub window_seconds: i32,
}

const COLUMNS: &str =
    "wrapped_api_id, \"limit\", window_seconds, requests_count, reset_at, updated_at";

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/rate-limit", tag = "rate-limits", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RateLimit), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
) -> ApiResult<Json<RateLimit>> {
    owned_api(&state.db, auth.user_id, api_id).await?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rate_limits WHERE wrapped_api_id = $1 AND user_id = $2"
    ))
    .bind(api_id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("rate limit"))
}

#[utoipa::path(put, path = "/api/v1/wrapped-apis/{id}/rate-limit", tag = "rate-limits", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = PutRateLimit,
    responses((status = 200, body = RateLimit), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<PutRateLimit>,
) -> ApiResult<Json<RateLimit>> {
    if body.limit < 1 {
        return Err(ApiError::validation("limit must be above 0"));
    }
    if !(1..=86_400).contains(&body.window_seconds) {
        return Err(ApiError::validation("window_seconds must be 1 to 86400"));
    }
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let limit: RateLimit = sqlx::query_as(&format!(
        "INSERT INTO rate_limits (id, user_id, wrapped_api_id, \"limit\", window_seconds) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (wrapped_api_id) DO UPDATE SET \"limit\" = EXCLUDED.\"limit\", window_seconds = EXCLUDED.window_seconds \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.user_id)
    .bind(api_id)
    .bind(body.limit)
    .bind(body.window_seconds)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, &Actor::from(&auth), "rate_limit.updated", "wrapped_api", Some(api_id),
        serde_json::json!({"fields": ["limit", "window_seconds"], "limit": body.limit, "window_seconds": body.window_seconds})).await?;
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &[api_id], Vec::new()).await;
    Ok(Json(limit))
}
