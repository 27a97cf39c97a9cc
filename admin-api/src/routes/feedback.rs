//! Ratings (1 to 5) of a wrapped API's answers.

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
    routes::{check_opt_len, owned_api},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Feedback {
    pub id: Uuid,
    pub wrapped_api_id: Uuid,
    pub request_id: Option<Uuid>,
    pub rating: i16,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl HasId for Feedback {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeedback {
    /// 1 to 5.
    pub rating: i16,
    pub comment: Option<String>,
    /// The gateway request rated, if any (its `x-request-id`).
    pub request_id: Option<Uuid>,
}

const COLUMNS: &str = "id, wrapped_api_id, request_id, rating, comment, created_at";

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/feedback", tag = "feedback", security(("bearer" = [])), params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Feedback>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Feedback>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM feedback WHERE wrapped_api_id = $1 AND user_id = $2 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(api_id)
    .bind(auth.user_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis/{id}/feedback", tag = "feedback", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = CreateFeedback,
    responses((status = 201, body = Feedback), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<CreateFeedback>,
) -> ApiResult<(StatusCode, Json<Feedback>)> {
    if !(1..=5).contains(&body.rating) {
        return Err(ApiError::validation("rating must be 1 to 5"));
    }
    check_opt_len("comment", body.comment.as_deref(), 5000)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let feedback: Feedback = sqlx::query_as(&format!(
        "INSERT INTO feedback (id, user_id, wrapped_api_id, request_id, rating, comment) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .bind(api_id)
    .bind(body.request_id)
    .bind(body.rating)
    .bind(&body.comment)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "feedback.created",
        "feedback",
        Some(id),
        serde_json::json!({"wrapped_api_id": api_id, "rating": body.rating}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(feedback)))
}
