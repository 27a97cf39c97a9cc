//! Tools an account defines, and which of its wrapped APIs offer them. A change to a tool
//! drops the cached records of every wrapped API it is attached to.

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
    invalidate,
    pagination::{page, HasId, Page, PageParams},
    routes::owned_api,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tool {
    pub id: Uuid,
    pub tool_name: String,
    /// function, thinking, web_search or code_interpreter.
    pub tool_type: String,
    #[schema(value_type = Object)]
    pub tool_config: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for Tool {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolType {
    Function,
    Thinking,
    WebSearch,
    CodeInterpreter,
}

impl ToolType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Thinking => "thinking",
            Self::WebSearch => "web_search",
            Self::CodeInterpreter => "code_interpreter",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    /// Letters, digits, `_` and `-`, 1 to 64.
    pub tool_name: String,
    pub tool_type: ToolType,
    /// A JSON object, e.g. a function definition.
    #[schema(value_type = Option<Object>)]
    pub tool_config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTool {
    pub tool_name: Option<String>,
    pub tool_type: Option<ToolType>,
    #[schema(value_type = Option<Object>)]
    pub tool_config: Option<serde_json::Map<String, serde_json::Value>>,
}

const COLUMNS: &str = "id, tool_name, tool_type, tool_config, created_at, updated_at";
const APIS_USING: &str = "SELECT wrapped_api_id FROM wrapped_api_tools WHERE tool_id = $1";

fn check_name(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "tool_name must be 1 to 64 letters, digits, '_' or '-'",
        ))
    }
}

fn name_conflict(e: sqlx::Error) -> ApiError {
    match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict("a tool with this name already exists".into()),
        other => other,
    }
}

#[utoipa::path(get, path = "/api/v1/tools", tag = "tools", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Tool>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Tool>>> {
    let limit = p.limit()?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tools WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/tools", tag = "tools", security(("bearer" = [])), request_body = CreateTool,
    responses((status = 201, body = Tool), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateTool>,
) -> ApiResult<(StatusCode, Json<Tool>)> {
    check_name(&body.tool_name)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    let tool: Tool = sqlx::query_as(&format!(
        "INSERT INTO tools (id, user_id, tool_name, tool_type, tool_config) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(&body.tool_name)
    .bind(body.tool_type.as_str())
    .bind(serde_json::Value::Object(body.tool_config.unwrap_or_default()))
    .fetch_one(&mut *tx)
    .await
    .map_err(name_conflict)?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "tool.created",
        "tool",
        Some(id),
        serde_json::json!({"fields": ["tool_name", "tool_type", "tool_config"]}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(tool)))
}

#[utoipa::path(get, path = "/api/v1/tools/{id}", tag = "tools", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Tool), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Tool>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tools WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("tool"))
}

#[utoipa::path(patch, path = "/api/v1/tools/{id}", tag = "tools", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateTool,
    responses((status = 200, body = Tool), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateTool>,
) -> ApiResult<Json<Tool>> {
    if let Some(name) = &body.tool_name {
        check_name(name)?;
    }
    let mut tx = state.db.begin().await?;
    let tool: Tool = sqlx::query_as(&format!(
        "UPDATE tools SET tool_name = COALESCE($3, tool_name), tool_type = COALESCE($4, tool_type), \
         tool_config = COALESCE($5, tool_config) WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(&body.tool_name)
    .bind(body.tool_type.map(ToolType::as_str))
    .bind(body.tool_config.as_ref().map(|m| serde_json::Value::Object(m.clone())))
    .fetch_optional(&mut *tx)
    .await
    .map_err(name_conflict)?
    .ok_or(ApiError::NotFound("tool"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "tool.updated",
        "tool",
        Some(id),
        audit::fields(&[
            ("tool_name", body.tool_name.is_some()),
            ("tool_type", body.tool_type.is_some()),
            ("tool_config", body.tool_config.is_some()),
        ]),
    )
    .await?;
    tx.commit().await?;
    let apis = invalidate::apis_using(&state, APIS_USING, id).await;
    invalidate::wrapped_apis(&state, &apis, Vec::new()).await;
    Ok(Json(tool))
}

#[utoipa::path(delete, path = "/api/v1/tools/{id}", tag = "tools", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    // Read before the delete: the attachments go with the tool.
    let apis = invalidate::apis_using(&state, APIS_USING, id).await;
    let mut tx = state.db.begin().await?;
    let done = sqlx::query("DELETE FROM tools WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("tool"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "tool.deleted",
        "tool",
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &apis, Vec::new()).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/tools", tag = "tools", security(("bearer" = [])), params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Tool>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list_attached(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Tool>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(
        "SELECT t.id, t.tool_name, t.tool_type, t.tool_config, t.created_at, t.updated_at FROM tools t \
         JOIN wrapped_api_tools a ON a.tool_id = t.id \
         WHERE a.wrapped_api_id = $1 AND t.user_id = $4 AND ($2::uuid IS NULL OR t.id < $2) ORDER BY t.id DESC LIMIT $3",
    )
    .bind(api_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .bind(auth.user_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(put, path = "/api/v1/wrapped-apis/{id}/tools/{tool_id}", tag = "tools", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("tool_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn attach(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((api_id, tool_id)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let tool: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tools WHERE id = $1 AND user_id = $2")
            .bind(tool_id)
            .bind(auth.user_id)
            .fetch_optional(&mut *tx)
            .await?;
    tool.ok_or(ApiError::NotFound("tool"))?;
    let done = sqlx::query(
        "INSERT INTO wrapped_api_tools (id, wrapped_api_id, tool_id) VALUES ($1, $2, $3) ON CONFLICT (wrapped_api_id, tool_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(api_id)
    .bind(tool_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        audit::record(
            &mut tx,
            &Actor::from(&auth),
            "tool.attached",
            "wrapped_api",
            Some(api_id),
            serde_json::json!({"tool_id": tool_id}),
        )
        .await?;
    }
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &[api_id], Vec::new()).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/wrapped-apis/{id}/tools/{tool_id}", tag = "tools", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("tool_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn detach(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((api_id, tool_id)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let done = sqlx::query(
        "DELETE FROM wrapped_api_tools a USING tools t WHERE a.wrapped_api_id = $1 AND a.tool_id = $2 AND t.id = a.tool_id AND t.user_id = $3",
    )
    .bind(api_id)
    .bind(tool_id)
    .bind(auth.user_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("tool attachment"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "tool.detached",
        "wrapped_api",
        Some(api_id),
        serde_json::json!({"tool_id": tool_id}),
    )
    .await?;
    tx.commit().await?;
    invalidate::wrapped_apis(&state, &[api_id], Vec::new()).await;
    Ok(StatusCode::NO_CONTENT)
}
