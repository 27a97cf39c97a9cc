//! Webhooks of a wrapped API: a validated http(s) URL, the event types it wants (or `*`), and a
//! Standard Webhooks secret (`whsec_…`) shown once and kept encrypted for the worker to sign
//! with. `POST /webhooks/{id}/test` queues a test delivery to the worker.

use std::collections::BTreeSet;

use axum::{extract::State, http::StatusCode, Json};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{
    crypto::webhook_secret_aad,
    events::{EventType, WebhookDelivery},
};

use crate::{
    audit::{self, Actor},
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    pagination::{page, HasId, Page, PageParams},
    routes::{owned_api, parse_http_url},
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Webhook {
    pub id: Uuid,
    pub wrapped_api_id: Uuid,
    pub url: String,
    #[schema(value_type = Vec<String>)]
    pub events: serde_json::Value,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for Webhook {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// The creation answer: the signing secret, this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: store it now, it is never shown again.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Event types (request.completed, request.failed, rate_limit.exceeded, key.created,
    /// key.revoked, config.updated) or `["*"]`.
    pub events: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestDelivery {
    /// The `webhook-id` header the delivery carries.
    pub delivery_id: String,
}

const COLUMNS: &str =
    "id, wrapped_api_id, url, events, is_active, disabled_reason, created_at, updated_at";
const SECRET_BYTES: usize = 32;

fn check_events(events: &[String]) -> ApiResult<serde_json::Value> {
    if events.len() == 1 && events[0] == "*" {
        return Ok(serde_json::json!(["*"]));
    }
    if events.is_empty() || events.len() > EventType::ALL.len() {
        return Err(ApiError::validation(
            "events must be a non-empty list of event types, or [\"*\"]",
        ));
    }
    let mut set = BTreeSet::new();
    for e in events {
        let t = EventType::parse(e).ok_or_else(|| {
            ApiError::validation(format!(
                "unknown event type {:?}",
                e.chars().take(64).collect::<String>()
            ))
        })?;
        set.insert(t.as_str());
    }
    Ok(serde_json::json!(set.into_iter().collect::<Vec<_>>()))
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/webhooks", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Webhook>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Webhook>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE wrapped_api_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(api_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis/{id}/webhooks", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let url = parse_http_url("url", &body.url, state.settings.security.allow_loopback)?;
    let events = check_events(&body.events)?;
    let mut raw = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!("whsec_{}", STANDARD.encode(raw));
    let id = Uuid::now_v7();
    let ciphertext = state
        .master_keys
        .encrypt(secret.as_bytes(), &webhook_secret_aad(id, api_id))
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    let webhook: Webhook = sqlx::query_as(&format!(
        "INSERT INTO webhooks (id, wrapped_api_id, url, secret_ciphertext, events) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(api_id)
    .bind(&url)
    .bind(ciphertext)
    .bind(&events)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, &Actor::from(&auth), "webhook.created", "webhook", Some(id),
        serde_json::json!({"fields": ["url", "events", "secret"], "wrapped_api_id": api_id, "events": events})).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    ))
}

const OWNED: &str = "FROM webhooks h JOIN wrapped_apis w ON w.id = h.wrapped_api_id WHERE h.id = $1 AND w.user_id = $2";

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Webhook>> {
    sqlx::query_as(&format!(
        "SELECT h.id, h.wrapped_api_id, h.url, h.events, h.is_active, h.disabled_reason, h.created_at, h.updated_at {OWNED}"
    ))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("webhook"))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> ApiResult<Json<Webhook>> {
    let url = match &body.url {
        Some(u) => Some(parse_http_url(
            "url",
            u,
            state.settings.security.allow_loopback,
        )?),
        None => None,
    };
    let events = match &body.events {
        Some(e) => Some(check_events(e)?),
        None => None,
    };
    let mut tx = state.db.begin().await?;
    // Re-enabling clears the reason the worker recorded when it disabled the endpoint.
    let webhook: Webhook = sqlx::query_as(
        "UPDATE webhooks h SET url = COALESCE($3, h.url), events = COALESCE($4, h.events), \
         is_active = COALESCE($5, h.is_active), \
         disabled_reason = CASE WHEN $5 IS TRUE THEN NULL ELSE h.disabled_reason END \
         FROM wrapped_apis w WHERE w.id = h.wrapped_api_id AND h.id = $1 AND w.user_id = $2 \
         RETURNING h.id, h.wrapped_api_id, h.url, h.events, h.is_active, h.disabled_reason, h.created_at, h.updated_at",
    )
    .bind(id)
    .bind(auth.user_id)
    .bind(&url)
    .bind(&events)
    .bind(body.is_active)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("webhook"))?;
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "webhook.updated",
        "webhook",
        Some(id),
        audit::fields(&[
            ("url", body.url.is_some()),
            ("events", body.events.is_some()),
            ("is_active", body.is_active.is_some()),
        ]),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(webhook))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let done = sqlx::query("DELETE FROM webhooks h USING wrapped_apis w WHERE w.id = h.wrapped_api_id AND h.id = $1 AND w.user_id = $2")
        .bind(id)
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("webhook"));
    }
    audit::record(
        &mut tx,
        &Actor::from(&auth),
        "webhook.deleted",
        "webhook",
        Some(id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 202, body = TestDelivery), (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<(StatusCode, Json<TestDelivery>)> {
    let found: Option<Uuid> = sqlx::query_scalar(&format!("SELECT h.wrapped_api_id {OWNED}"))
        .bind(id)
        .bind(auth.user_id)
        .fetch_optional(&state.db)
        .await?;
    let api_id = found.ok_or(ApiError::NotFound("webhook"))?;
    let delivery_id = WebhookDelivery::new_id();
    let delivery = WebhookDelivery {
        delivery_id: delivery_id.clone(),
        webhook_id: id,
        event_type: "webhook.test".into(),
        payload: serde_json::json!({
            "type": "webhook.test",
            "timestamp": Utc::now(),
            "data": {"webhook_id": id, "wrapped_api_id": api_id, "message": "This is a test delivery from Wrap-X."},
        }),
        attempt: 0,
    };
    if !state.events.delivery(&delivery).await {
        return Err(ApiError::Unavailable(
            "the delivery queue is unavailable, try again later",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(TestDelivery { delivery_id })))
}
