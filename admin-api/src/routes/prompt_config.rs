//! The prompt configuration of a wrapped API and its numbered versions. Every PUT and every
//! restore writes the current config and a new `config_versions` row in one transaction that
//! first locks the wrapped API's row, so concurrent writers get distinct, gapless numbers.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{events::EventType, prompt::PromptConfig};

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

/// The body of `PUT …/prompt-config` (every field optional, unknown fields refused).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptConfigBody {
    pub role: Option<String>,
    pub instructions: Option<String>,
    pub rules: Option<String>,
    pub behavior: Option<String>,
    pub tone: Option<String>,
    pub examples: Option<Vec<ExampleBody>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExampleBody {
    pub user: String,
    pub assistant: String,
}

/// The current configuration and its version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PromptConfigOut {
    pub wrapped_api_id: Uuid,
    pub version: i32,
    pub role: String,
    pub instructions: String,
    pub rules: String,
    pub behavior: String,
    pub tone: String,
    pub examples: Vec<ExampleBody>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConfigVersion {
    pub id: Uuid,
    pub version: i32,
    /// The whole configuration as it was saved.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The version this one restored, if it is a restore.
    pub restored_from: Option<i32>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl HasId for ConfigVersion {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A `prompt_configs` row as read back.
#[derive(sqlx::FromRow)]
struct StoredConfig {
    role: String,
    instructions: String,
    rules: String,
    behavior: String,
    tone: String,
    examples: serde_json::Value,
    current_version: i32,
    updated_at: DateTime<Utc>,
}

const MAX_EXAMPLES: usize = 100;

fn limits(config: &PromptConfig) -> ApiResult<()> {
    for (field, value, max) in [
        ("role", &config.role, 20_000),
        ("instructions", &config.instructions, 100_000),
        ("rules", &config.rules, 100_000),
        ("behavior", &config.behavior, 20_000),
        ("tone", &config.tone, 20_000),
    ] {
        if value.chars().count() > max {
            return Err(ApiError::validation(format!(
                "{field} must be at most {max} characters"
            )));
        }
    }
    if config.examples.len() > MAX_EXAMPLES {
        return Err(ApiError::validation(format!(
            "at most {MAX_EXAMPLES} examples"
        )));
    }
    Ok(())
}

fn to_out(
    api_id: Uuid,
    version: i32,
    config: PromptConfig,
    updated_at: DateTime<Utc>,
) -> PromptConfigOut {
    PromptConfigOut {
        wrapped_api_id: api_id,
        version,
        role: config.role,
        instructions: config.instructions,
        rules: config.rules,
        behavior: config.behavior,
        tone: config.tone,
        examples: config
            .examples
            .into_iter()
            .map(|e| ExampleBody {
                user: e.user,
                assistant: e.assistant,
            })
            .collect(),
        updated_at,
    }
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/prompt-config", tag = "prompt-config", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = PromptConfigOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
) -> ApiResult<Json<PromptConfigOut>> {
    let row: Option<StoredConfig> = sqlx::query_as(
        "SELECT p.role, p.instructions, p.rules, p.behavior, p.tone, p.examples, p.current_version, p.updated_at \
         FROM prompt_configs p JOIN wrapped_apis w ON w.id = p.wrapped_api_id WHERE w.id = $1 AND w.user_id = $2",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .fetch_optional(&state.db)
    .await?;
    let StoredConfig {
        role,
        instructions,
        rules,
        behavior,
        tone,
        examples,
        current_version: version,
        updated_at,
    } = row.ok_or(ApiError::NotFound("prompt config"))?;
    let examples = serde_json::from_value(examples).map_err(ApiError::internal)?;
    let config = PromptConfig {
        role,
        instructions,
        rules,
        behavior,
        tone,
        examples,
    };
    Ok(Json(to_out(api_id, version, config, updated_at)))
}

#[utoipa::path(put, path = "/api/v1/wrapped-apis/{id}/prompt-config", tag = "prompt-config", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = PromptConfigBody,
    responses((status = 200, body = PromptConfigOut), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<PromptConfigOut>> {
    // The core's type is the one definition of a config; it refuses unknown fields.
    let config: PromptConfig = serde_json::from_value(body)
        .map_err(|e| ApiError::validation(format!("invalid prompt config: {e}")))?;
    limits(&config)?;
    save(&state, &auth, api_id, config, None).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/wrapped-apis/{id}/prompt-config/versions", tag = "prompt-config", security(("bearer" = [])),
    params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ConfigVersion>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(api_id): PathParams<Uuid>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<Page<ConfigVersion>>> {
    let limit = p.limit()?;
    owned_api(&state.db, auth.user_id, api_id).await?;
    let rows = sqlx::query_as(
        "SELECT id, version, config_snapshot AS config, restored_from, created_by, created_at FROM config_versions \
         WHERE wrapped_api_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(api_id)
    .bind(p.cursor)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(post, path = "/api/v1/wrapped-apis/{id}/prompt-config/versions/{version}/restore", tag = "prompt-config", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("version" = i32, Path)),
    responses((status = 200, body = PromptConfigOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((api_id, version)): PathParams<(Uuid, i32)>,
) -> ApiResult<Json<PromptConfigOut>> {
    let snapshot: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT v.config_snapshot FROM config_versions v JOIN wrapped_apis w ON w.id = v.wrapped_api_id \
         WHERE w.id = $1 AND w.user_id = $2 AND v.version = $3",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .bind(version)
    .fetch_optional(&state.db)
    .await?;
    let snapshot = snapshot.ok_or(ApiError::NotFound("version"))?;
    let config: PromptConfig = serde_json::from_value(snapshot).map_err(ApiError::internal)?;
    save(&state, &auth, api_id, config, Some(version))
        .await
        .map(Json)
}

/// Writes `config` as the current one and as the next version.
async fn save(
    state: &AppState,
    auth: &Auth,
    api_id: Uuid,
    config: PromptConfig,
    restored_from: Option<i32>,
) -> ApiResult<PromptConfigOut> {
    let mut tx = state.db.begin().await?;
    // The lock on the API's row serialises writers, including the very first one.
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM wrapped_apis WHERE id = $1 AND user_id = $2 FOR UPDATE")
            .bind(api_id)
            .bind(auth.user_id)
            .fetch_optional(&mut *tx)
            .await?;
    locked.ok_or(ApiError::NotFound("wrapped API"))?;
    let previous: Option<i32> =
        sqlx::query_scalar("SELECT max(version) FROM config_versions WHERE wrapped_api_id = $1")
            .bind(api_id)
            .fetch_one(&mut *tx)
            .await?;
    let version = previous.unwrap_or(0) + 1;
    let examples = serde_json::to_value(&config.examples).map_err(ApiError::internal)?;
    let (config_id, updated_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO prompt_configs (id, wrapped_api_id, role, instructions, rules, behavior, tone, examples, current_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (wrapped_api_id) DO UPDATE SET role = EXCLUDED.role, instructions = EXCLUDED.instructions, \
           rules = EXCLUDED.rules, behavior = EXCLUDED.behavior, tone = EXCLUDED.tone, examples = EXCLUDED.examples, \
           current_version = EXCLUDED.current_version \
         RETURNING id, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(api_id)
    .bind(&config.role)
    .bind(&config.instructions)
    .bind(&config.rules)
    .bind(&config.behavior)
    .bind(&config.tone)
    .bind(examples)
    .bind(version)
    .fetch_one(&mut *tx)
    .await?;
    let snapshot = serde_json::to_value(&config).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO config_versions (id, prompt_config_id, wrapped_api_id, version, config_snapshot, restored_from, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(config_id)
    .bind(api_id)
    .bind(version)
    .bind(&snapshot)
    .bind(restored_from)
    .bind(auth.user_id)
    .execute(&mut *tx)
    .await?;
    let action = if restored_from.is_some() {
        "prompt_config.restored"
    } else {
        "prompt_config.updated"
    };
    audit::record(&mut tx, &Actor::from(auth), action, "wrapped_api", Some(api_id), serde_json::json!({
        "fields": ["role", "instructions", "rules", "behavior", "tone", "examples"], "version": version, "restored_from": restored_from,
    })).await?;
    tx.commit().await?;
    invalidate::wrapped_apis(state, &[api_id], Vec::new()).await;
    state.events.admin(
        EventType::ConfigUpdated,
        auth.user_id,
        api_id,
        serde_json::json!({"version": version, "restored_from": restored_from}),
    );
    Ok(to_out(api_id, version, config, updated_at))
}
