//! A wrapped API's routing (API.md, "Routing: retries and fallbacks"): `GET` answers the
//! effective routing (the stored one, or the API's own provider and model once); `PUT` and
//! `DELETE` change it as a new config version, through the prompt config's
//! [`save_version`](super::prompt_config::save_version), so versions show it and a restore
//! brings it back.

use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::routing::{Routing, RoutingInput};

use crate::{
    auth::Auth,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams},
    routes::prompt_config::{save_version, Change},
    state::AppState,
};

/// The fields a routing change lists in its audit record.
const FIELDS: &[&str] = &["strategy", "targets", "retry", "cooldown"];

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/routing", tag = "routing", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RoutingOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
) -> ApiResult<Json<Routing>> {
    let row: Option<(Uuid, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT provider_id, model, routing FROM wrapped_apis WHERE id = $1 AND user_id = $2",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?;
    let (provider_id, model, stored) = row.ok_or(ApiError::NotFound("wrapped API"))?;
    let routing = match stored {
        Some(value) => serde_json::from_value(value).map_err(ApiError::internal)?,
        None => Routing::single(provider_id, &model),
    };
    Ok(Json(routing))
}

#[utoipa::path(put, path = "/api/v1/wrapped-apis/{id}/routing", tag = "routing", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = RoutingBody,
    responses((status = 200, body = RoutingOut), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Routing>> {
    // The core's input type refuses unknown fields; its `validate` names each other mistake.
    let input: RoutingInput = serde_json::from_value(body)
        .map_err(|e| ApiError::validation(format!("invalid routing: {e}")))?;
    let routing = input
        .validate()
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let change = Change {
        prompt: None,
        routing: Some(Some(routing)),
        restored_from: None,
        action: "routing.updated",
        fields: FIELDS,
    };
    let saved = save_version(&state, &auth, api_id, change).await?;
    Ok(Json(saved.effective_routing()))
}

#[utoipa::path(delete, path = "/api/v1/wrapped-apis/{id}/routing", tag = "routing", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RoutingOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
) -> ApiResult<Json<Routing>> {
    let change = Change {
        prompt: None,
        routing: Some(None),
        restored_from: None,
        action: "routing.deleted",
        fields: FIELDS,
    };
    let saved = save_version(&state, &auth, api_id, change).await?;
    Ok(Json(saved.effective_routing()))
}

// The OpenAPI mirrors of `wrapx_core::routing`'s types: the core stays free of utoipa, and the
// document states the limits `RoutingInput::validate` enforces.

/// How the first target is chosen; the others follow as fallbacks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    Fallback,
    Weighted,
}

/// The body of `PUT …/routing`; left-out parts take their defaults (fallback, weight 1,
/// 3 attempts on 429 and 5xx, cooldown of 30 s after 3 failures). Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingBody {
    pub strategy: Option<StrategyName>,
    /// 1 to 10 targets, each on one of the account's providers.
    #[schema(min_items = 1, max_items = 10)]
    pub targets: Vec<TargetBody>,
    pub retry: Option<RetryBody>,
    pub cooldown: Option<CooldownBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    pub provider_id: Uuid,
    #[schema(min_length = 1, max_length = 200)]
    pub model: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Attempts in all, the first included.
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<i64>,
    /// Statuses (400 to 599) that move the request on to another attempt.
    pub on_status: Option<Vec<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CooldownBody {
    /// Failures in a row that put a target to rest; 0: targets never rest.
    #[schema(minimum = 0, maximum = 1000)]
    pub failures: Option<i64>,
    /// How long it rests.
    #[schema(minimum = 1, maximum = 86400)]
    pub seconds: Option<i64>,
}

/// The effective routing: the stored one, or the API's own provider and model, one attempt.
#[derive(Debug, ToSchema)]
#[schema(as = Routing)]
pub struct RoutingOut {
    pub strategy: StrategyName,
    pub targets: Vec<TargetOut>,
    pub retry: RetryOut,
    pub cooldown: CooldownOut,
}

#[derive(Debug, ToSchema)]
pub struct TargetOut {
    pub provider_id: Uuid,
    pub model: String,
    pub weight: u32,
}

#[derive(Debug, ToSchema)]
pub struct RetryOut {
    pub max_attempts: u32,
    pub on_status: Vec<u16>,
}

#[derive(Debug, ToSchema)]
pub struct CooldownOut {
    pub failures: u32,
    pub seconds: u32,
}
