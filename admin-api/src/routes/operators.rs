//! Operator routes (users with the admin flag): list users, deactivate or re-activate one.
//! Deactivation revokes the user's sessions in the same transaction and tells the gateways to
//! drop everything of theirs.

use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    invalidate,
    pagination::{page, Page, PageParams},
    routes::auth::{User, USER_COLUMNS},
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub is_active: bool,
}

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "operators", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<User>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<User>>> {
    auth.require_admin()?;
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    ))
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "operators", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> ApiResult<Json<User>> {
    auth.require_admin()?;
    if id == auth.user_id && !body.is_active {
        return Err(ApiError::Conflict(
            "operators cannot deactivate themselves".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let user: User = sqlx::query_as(&format!(
        "UPDATE users SET is_active = $2 WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(body.is_active)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("user"))?;
    if !body.is_active {
        sqlx::query("UPDATE sessions SET is_active = false, revoked_reason = 'user_deactivated' WHERE user_id = $1 AND is_active")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let action = if body.is_active {
        "user.activated"
    } else {
        "user.deactivated"
    };
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        action,
        "user",
        Some(id),
        serde_json::json!({"fields": ["is_active"]}),
    )
    .await?;
    tx.commit().await?;
    invalidate::user(&state, id).await;
    Ok(Json(user))
}
