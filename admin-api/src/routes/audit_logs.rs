//! The caller's own audit trail, read-only.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::ApiResult,
    extract::QueryParams,
    pagination::{page, HasId, Page, PageParams},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditLog {
    pub id: Uuid,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl HasId for AuditLog {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[utoipa::path(get, path = "/api/v1/audit-logs", tag = "audit", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<AuditLog>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<AuditLog>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(
        "SELECT id, action, resource_type, resource_id, host(ip_address) AS ip_address, user_agent, details, created_at \
         FROM audit_logs WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}
