//! The account's notifications (raised by the worker): list, mark read.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{PathParams, QueryParams},
    pagination::{page, HasId, Page, PageParams},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub wrapped_api_id: Option<Uuid>,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    pub title: String,
    pub message: String,
    pub is_read: bool,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl HasId for Notification {
    fn id(&self) -> Uuid {
        self.id
    }
}

const COLUMNS: &str = "id, wrapped_api_id, type, title, message, is_read, metadata, created_at";

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Notification>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Notification>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Notification), (status = 404, body = crate::error::ErrorBody)))]
pub async fn mark_read(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Notification>> {
    let mut tx = state.db.begin().await?;
    let n: Notification = sqlx::query_as(&format!(
        "UPDATE notifications SET is_read = true WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("notification"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "notification.read",
        "notification",
        Some(id),
        serde_json::json!({"fields": ["is_read"]}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(n))
}
