//! LLM providers: the account's own provider credentials. The API key is write-only: it is
//! encrypted under the master key with the row's id and owner as associated data, and answers
//! show only its last four characters.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{crypto::provider_key_aad, types::ProviderKind};

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    invalidate,
    pagination::{page, HasId, Page, PageParams},
    routes::{check_opt_len, parse_http_url},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Provider {
    pub id: Uuid,
    /// openai, anthropic, deepseek or openai_compatible.
    pub provider_name: String,
    pub display_name: Option<String>,
    /// The last four characters of the key.
    pub api_key_hint: String,
    pub api_base_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for Provider {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// openai, anthropic, deepseek or openai_compatible.
    pub provider_name: String,
    /// Write-only: never returned.
    pub api_key: String,
    /// Required for openai_compatible.
    pub api_base_url: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    pub api_key: Option<String>,
    pub api_base_url: Option<String>,
    pub display_name: Option<String>,
}

const COLUMNS: &str =
    "id, provider_name, display_name, api_key_hint, api_base_url, created_at, updated_at";
/// The wrapped APIs that use a provider: as their own provider or as a target of their routing.
const APIS_USING: &str = "SELECT id FROM wrapped_apis WHERE provider_id = $1 OR routing @> \
     jsonb_build_object('targets', jsonb_build_array(jsonb_build_object('provider_id', $1::text)))";
/// Whether a provider is a target of a wrapped API's routing (its own provider is guarded by
/// the foreign key).
const ROUTED_TO: &str = "SELECT EXISTS (SELECT 1 FROM wrapped_apis WHERE user_id = $2 AND routing @> \
     jsonb_build_object('targets', jsonb_build_array(jsonb_build_object('provider_id', $1::text))))";
/// What a delete of a provider in use answers.
const IN_USE: &str = "the provider is still used by wrapped APIs";

fn check_api_key(key: &str) -> ApiResult<String> {
    let n = key.chars().count();
    if !(8..=1000).contains(&n) || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::validation(
            "api_key must be 8 to 1000 characters without spaces",
        ));
    }
    let chars: Vec<char> = key.chars().collect();
    Ok(chars[chars.len() - 4..].iter().collect())
}

#[utoipa::path(get, path = "/api/v1/providers", tag = "providers", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Provider>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Provider>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM llm_providers WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/providers", tag = "providers", security(("bearer" = [])), request_body = CreateProvider,
    responses((status = 201, body = Provider), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateProvider>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    let kind: ProviderKind = body.provider_name.parse().map_err(|_| {
        ApiError::validation(
            "provider_name must be one of openai, anthropic, deepseek, openai_compatible",
        )
    })?;
    let hint = check_api_key(&body.api_key)?;
    let base_url = match &body.api_base_url {
        Some(u) => Some(parse_http_url(
            "api_base_url",
            u,
            state.settings.security.allow_loopback,
        )?),
        None => None,
    };
    if kind == ProviderKind::OpenaiCompatible && base_url.is_none() {
        return Err(ApiError::validation(
            "api_base_url is required for openai_compatible",
        ));
    }
    check_opt_len("display_name", body.display_name.as_deref(), 200)?;
    // The id is made first: it is part of the ciphertext's associated data.
    let id = Uuid::now_v7();
    let ciphertext = state
        .master_keys
        .encrypt(body.api_key.as_bytes(), &provider_key_aad(id, auth.user_id))
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    let provider: Provider = sqlx::query_as(&format!(
        "INSERT INTO llm_providers (id, user_id, provider_name, display_name, api_key_ciphertext, api_key_hint, api_base_url) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(kind.as_str())
    .bind(&body.display_name)
    .bind(ciphertext)
    .bind(hint)
    .bind(&base_url)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, &Actor::from(&auth), "provider.created", "provider", Some(id),
        serde_json::json!({"fields": ["provider_name", "api_key", "api_base_url", "display_name"], "provider_name": kind.as_str()})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(provider)))
}

#[utoipa::path(get, path = "/api/v1/providers/{id}", tag = "providers", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Provider), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Provider>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM llm_providers WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("provider"))
}

#[utoipa::path(patch, path = "/api/v1/providers/{id}", tag = "providers", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateProvider,
    responses((status = 200, body = Provider), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateProvider>,
) -> ApiResult<Json<Provider>> {
    check_opt_len("display_name", body.display_name.as_deref(), 200)?;
    let base_url = match &body.api_base_url {
        Some(u) => Some(parse_http_url(
            "api_base_url",
            u,
            state.settings.security.allow_loopback,
        )?),
        None => None,
    };
    let (ciphertext, hint) = match &body.api_key {
        Some(key) => {
            let hint = check_api_key(key)?;
            let c = state
                .master_keys
                .encrypt(key.as_bytes(), &provider_key_aad(id, auth.user_id))
                .map_err(ApiError::internal)?;
            (Some(c), Some(hint))
        }
        None => (None, None),
    };
    let mut tx = state.db.begin().await?;
    let provider: Provider = sqlx::query_as(&format!(
        "UPDATE llm_providers SET api_key_ciphertext = COALESCE($3, api_key_ciphertext), \
         api_key_hint = COALESCE($4, api_key_hint), api_base_url = COALESCE($5, api_base_url), \
         display_name = COALESCE($6, display_name) WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(ciphertext)
    .bind(hint)
    .bind(&base_url)
    .bind(&body.display_name)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("provider"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "provider.updated",
        "provider",
        Some(id),
        audit::fields(&[
            ("api_key", body.api_key.is_some()),
            ("api_base_url", body.api_base_url.is_some()),
            ("display_name", body.display_name.is_some()),
        ]),
    )
    .await?;
    tx.commit().await?;
    let apis = invalidate::apis_using(&state, APIS_USING, id).await;
    invalidate::wrapped_apis(&state, &apis, Vec::new()).await;
    Ok(Json(provider))
}

#[utoipa::path(delete, path = "/api/v1/providers/{id}", tag = "providers", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    // The row's lock waits for a routing change that is making it a target (it holds a key-share
    // lock on it until its commit), so the check below sees that routing.
    let found: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM llm_providers WHERE id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    found.ok_or(ApiError::NotFound("provider"))?;
    let routed_to: bool = sqlx::query_scalar(ROUTED_TO)
        .bind(id)
        .bind(auth.user_id)
        .fetch_one(&mut *tx)
        .await?;
    if routed_to {
        return Err(ApiError::Conflict(IN_USE.into()));
    }
    let done = sqlx::query("DELETE FROM llm_providers WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => ApiError::Conflict(IN_USE.into()),
            other => other,
        })?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("provider"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "provider.deleted",
        "provider",
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
