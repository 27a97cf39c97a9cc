//! Wrapped APIs: a pinned model on one of the account's providers, published under a generated
//! endpoint id. Every change drops the gateways' cached record (and its keys' records).

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::types::{EndpointId, SystemMessagePolicy};

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    invalidate,
    pagination::{page, HasId, Page, PageParams},
    routes::check_len,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WrappedApi {
    pub id: Uuid,
    pub project_id: Uuid,
    pub provider_id: Uuid,
    pub name: String,
    /// The public id in `/w/{endpoint_id}/v1/…`.
    pub endpoint_id: String,
    pub model: String,
    pub is_active: bool,
    /// keep, drop or reject: what the gateway does with a client's own system message.
    pub system_message_policy: String,
    pub max_tokens_cap: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for WrappedApi {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWrappedApi {
    pub name: String,
    pub project_id: Uuid,
    pub provider_id: Uuid,
    pub model: String,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub system_message_policy: Option<SystemMessagePolicy>,
    pub max_tokens_cap: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWrappedApi {
    pub name: Option<String>,
    pub project_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub model: Option<String>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub system_message_policy: Option<SystemMessagePolicy>,
    pub max_tokens_cap: Option<i32>,
}

const COLUMNS: &str = "id, project_id, provider_id, name, endpoint_id, model, is_active, system_message_policy, max_tokens_cap, created_at, updated_at";

/// 404 unless the project and provider (when given) are the caller's own.
async fn check_refs(
    conn: &mut PgConnection,
    user_id: Uuid,
    project_id: Option<Uuid>,
    provider_id: Option<Uuid>,
) -> ApiResult<()> {
    if let Some(id) = project_id {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM projects WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
        found.ok_or(ApiError::NotFound("project"))?;
    }
    if let Some(id) = provider_id {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM llm_providers WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
        found.ok_or(ApiError::NotFound("provider"))?;
    }
    Ok(())
}

fn check_cap(cap: Option<i32>) -> ApiResult<()> {
    match cap {
        Some(n) if n <= 0 => Err(ApiError::validation("max_tokens_cap must be above 0")),
        _ => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis", tag = "wrapped-apis", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<WrappedApi>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<WrappedApi>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wrapped_apis WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis", tag = "wrapped-apis", security(("bearer" = [])), request_body = CreateWrappedApi,
    responses((status = 201, body = WrappedApi), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateWrappedApi>,
) -> ApiResult<(StatusCode, Json<WrappedApi>)> {
    check_len("name", &body.name, 1, 200)?;
    check_len("model", &body.model, 1, 200)?;
    check_cap(body.max_tokens_cap)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    check_refs(
        &mut tx,
        auth.user_id,
        Some(body.project_id),
        Some(body.provider_id),
    )
    .await?;
    let api: WrappedApi = sqlx::query_as(&format!(
        "INSERT INTO wrapped_apis (id, user_id, project_id, provider_id, name, endpoint_id, model, is_active, system_message_policy, max_tokens_cap) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(body.project_id)
    .bind(body.provider_id)
    .bind(&body.name)
    .bind(EndpointId::generate().as_str())
    .bind(&body.model)
    .bind(body.is_active.unwrap_or(true))
    .bind(body.system_message_policy.unwrap_or_default().as_str())
    .bind(body.max_tokens_cap)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, &Actor::from(&auth), "wrapped_api.created", "wrapped_api", Some(id),
        serde_json::json!({"fields": ["name", "project_id", "provider_id", "model"], "model": body.model})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(api)))
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}", tag = "wrapped-apis", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WrappedApi), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<WrappedApi>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wrapped_apis WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("wrapped API"))
}

#[utoipa::path(patch, path = "/api/v1/wrapped-apis/{id}", tag = "wrapped-apis", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateWrappedApi,
    responses((status = 200, body = WrappedApi), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateWrappedApi>,
) -> ApiResult<Json<WrappedApi>> {
    if let Some(name) = &body.name {
        check_len("name", name, 1, 200)?;
    }
    if let Some(model) = &body.model {
        check_len("model", model, 1, 200)?;
    }
    check_cap(body.max_tokens_cap)?;
    let mut tx = state.db.begin().await?;
    check_refs(&mut tx, auth.user_id, body.project_id, body.provider_id).await?;
    let api: WrappedApi = sqlx::query_as(&format!(
        "UPDATE wrapped_apis SET name = COALESCE($3, name), project_id = COALESCE($4, project_id), \
         provider_id = COALESCE($5, provider_id), model = COALESCE($6, model), is_active = COALESCE($7, is_active), \
         system_message_policy = COALESCE($8, system_message_policy), max_tokens_cap = COALESCE($9, max_tokens_cap) \
         WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(&body.name)
    .bind(body.project_id)
    .bind(body.provider_id)
    .bind(&body.model)
    .bind(body.is_active)
    .bind(body.system_message_policy.map(|p| p.as_str()))
    .bind(body.max_tokens_cap)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("wrapped API"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "wrapped_api.updated",
        "wrapped_api",
        Some(id),
        audit::fields(&[
            ("name", body.name.is_some()),
            ("project_id", body.project_id.is_some()),
            ("provider_id", body.provider_id.is_some()),
            ("model", body.model.is_some()),
            ("is_active", body.is_active.is_some()),
            (
                "system_message_policy",
                body.system_message_policy.is_some(),
            ),
            ("max_tokens_cap", body.max_tokens_cap.is_some()),
        ]),
    )
    .await?;
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &[id], Vec::new()).await;
    Ok(Json(api))
}

#[utoipa::path(delete, path = "/api/v1/wrapped-apis/{id}", tag = "wrapped-apis", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    // The keys go with the API (cascade): read their hashes first to drop their records.
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT k.key_hash FROM api_keys k JOIN wrapped_apis w ON w.id = k.wrapped_api_id WHERE w.id = $1 AND w.user_id = $2",
    )
    .bind(id)
    .bind(auth.user_id)
    .fetch_all(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM wrapped_apis WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("wrapped API"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "wrapped_api.deleted",
        "wrapped_api",
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &[id], hashes).await;
    Ok(StatusCode::NO_CONTENT)
}
