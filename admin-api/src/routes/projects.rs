//! Projects: an account's groups of wrapped APIs.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    pagination::{page, HasId, Page, PageParams},
    routes::{check_len, check_opt_len},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for Project {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    pub name: Option<String>,
    pub description: Option<String>,
}

const COLUMNS: &str = "id, name, description, created_at, updated_at";

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Project>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Project>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projects WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", security(("bearer" = [])), request_body = CreateProject,
    responses((status = 201, body = Project), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    check_len("name", &body.name, 1, 200)?;
    check_opt_len("description", body.description.as_deref(), 5000)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    let project: Project = sqlx::query_as(&format!(
        "INSERT INTO projects (id, user_id, name, description) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(&body.name)
    .bind(&body.description)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "project.created",
        "project",
        Some(id),
        audit::fields(&[("name", true), ("description", body.description.is_some())]),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Project>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projects WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("project"))
}

#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateProject,
    responses((status = 200, body = Project), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> ApiResult<Json<Project>> {
    if let Some(name) = &body.name {
        check_len("name", name, 1, 200)?;
    }
    check_opt_len("description", body.description.as_deref(), 5000)?;
    let mut tx = state.db.begin().await?;
    let project: Project = sqlx::query_as(&format!(
        "UPDATE projects SET name = COALESCE($3, name), description = COALESCE($4, description) \
         WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(&body.name)
    .bind(&body.description)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("project"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "project.updated",
        "project",
        Some(id),
        audit::fields(&[
            ("name", body.name.is_some()),
            ("description", body.description.is_some()),
        ]),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(project))
}

#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let done = sqlx::query("DELETE FROM projects WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => {
                ApiError::Conflict("the project still has wrapped APIs".into())
            }
            other => other,
        })?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("project"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "project.deleted",
        "project",
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
