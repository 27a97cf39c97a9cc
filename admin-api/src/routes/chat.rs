//! The owner's playground history with a wrapped API. `POST` records the message; it does not
//! call the provider (the answer's `response` stays null): sending test traffic goes through
//! the gateway with a key, where it is limited, logged and billed like any other request.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::ApiResult,
    extract::{JsonBody, PathParams, QueryParams},
    pagination::{page, HasId, Page, PageParams},
    routes::{check_len, owned_api},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ChatMessage {
    pub id: Uuid,
    pub wrapped_api_id: Uuid,
    pub message: String,
    pub response: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl HasId for ChatMessage {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChatMessage {
    pub message: String,
}

const COLUMNS: &str = "id, wrapped_api_id, message, response, created_at";

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/chat", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ChatMessage>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<ChatMessage>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM chat_messages WHERE wrapped_api_id = $1 AND user_id = $2 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(api_id)
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis/{id}/chat", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = CreateChatMessage,
    responses((status = 201, body = ChatMessage), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<CreateChatMessage>,
) -> ApiResult<(StatusCode, Json<ChatMessage>)> {
    check_len("message", &body.message, 1, 100_000)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let message: ChatMessage = sqlx::query_as(&format!(
        "INSERT INTO chat_messages (id, user_id, wrapped_api_id, message) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(api_id)
    .bind(&body.message)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "chat_message.created",
        "chat_message",
        Some(id),
        serde_json::json!({"wrapped_api_id": api_id}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(message)))
}
