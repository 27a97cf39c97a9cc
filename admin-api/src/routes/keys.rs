//! Keys of a wrapped API: generated here, shown once in the creation answer, then kept only as
//! a keyed hash. Revoking drops the gateways' cached record and emits `key.revoked`.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{events::EventType, keys::ApiKey};

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    invalidate,
    pagination::{page, HasId, Page, PageParams},
    routes::{check_len, owned_api},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Key {
    pub id: Uuid,
    pub wrapped_api_id: Uuid,
    pub key_name: String,
    /// The key's first characters, to recognise it.
    pub key_hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl HasId for Key {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// The creation answer: the key itself, this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key_record: Key,
    /// The plaintext key: store it now, it is never shown again.
    pub key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub key_name: String,
    /// Must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, wrapped_api_id, key_name, key_hint, expires_at, is_active, revoked_at, last_used_at, created_at";

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/keys", tag = "keys", security(("bearer" = [])), params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Key>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Key>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE wrapped_api_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(api_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis/{id}/keys", tag = "keys", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    check_len("key_name", &body.key_name, 1, 200)?;
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::validation("expires_at must be in the future"));
    }
    let key = ApiKey::generate();
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let record: Key = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, wrapped_api_id, key_hash, key_hint, key_name, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(api_id)
    .bind(state.hasher.hash_key(&key).to_hex())
    .bind(key.hint())
    .bind(&body.key_name)
    .bind(body.expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, &Actor::from(&auth), "key.created", "api_key", Some(id),
        serde_json::json!({"fields": ["key_name", "expires_at"], "wrapped_api_id": api_id, "key_hint": record.key_hint})).await?;
    tx.commit().await?;
    state.events.admin(EventType::KeyCreated, auth.user_id, api_id, serde_json::json!({
        "key_id": id, "key_name": record.key_name, "key_hint": record.key_hint, "expires_at": record.expires_at,
    }));
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key_record: record,
            key: key.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/wrapped-apis/{id}/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((api_id, key_id)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    // Revoking twice is not an error; the second time changes nothing and emits nothing.
    let row: Option<(String, bool)> = sqlx::query_as(
        "UPDATE api_keys k SET is_active = false, revoked_at = COALESCE(k.revoked_at, now()) \
         FROM api_keys old WHERE k.id = $1 AND k.wrapped_api_id = $2 AND old.id = k.id \
         RETURNING k.key_hash, old.is_active",
    )
    .bind(key_id)
    .bind(api_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (hash, was_active) = row.ok_or(ApiError::NotFound("key"))?;
    if was_active {
        audit::record(
            &mut tx,
            &Actor::from(&auth),
            "key.revoked",
            "api_key",
            Some(key_id),
            serde_json::json!({"wrapped_api_id": api_id}),
        )
        .await?;
    }
    tx.commit().await?;
    invalidate::key(&state, &hash).await;
    if was_active {
        state.events.admin(
            EventType::KeyRevoked,
            auth.user_id,
            api_id,
            serde_json::json!({"key_id": key_id}),
        );
    }
    Ok(StatusCode::NO_CONTENT)
}
