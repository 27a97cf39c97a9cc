//! The prompt configuration of a wrapped API and its numbered versions. A version holds the
//! prompt config and the API's routing (`"routing"` in its snapshot). Every prompt PUT, every
//! routing change and every restore goes through [`save_version`]: the current config and a new
//! `config_versions` row in one transaction that first locks the wrapped API's row, so
//! concurrent writers get distinct, gapless numbers.

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{events::EventType, prompt::PromptConfig, routing::Routing};

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
    /// The whole configuration as it was saved: the prompt config's fields and `routing`
    /// (the routing object, or null for none).
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

/// The fields a prompt PUT lists in its audit record; a restore puts back the routing too.
const PROMPT_FIELDS: &[&str] = &[
    "role",
    "instructions",
    "rules",
    "behavior",
    "tone",
    "examples",
];
const RESTORED_FIELDS: &[&str] = &[
    "role",
    "instructions",
    "rules",
    "behavior",
    "tone",
    "examples",
    "routing",
];

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
    let change = Change {
        prompt: Some(config),
        routing: None,
        restored_from: None,
        action: "prompt_config.updated",
        fields: PROMPT_FIELDS,
    };
    let saved = save_version(&state, &auth, api_id, change).await?;
    Ok(Json(to_out(
        api_id,
        saved.version,
        saved.config,
        saved.updated_at,
    )))
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
    responses((status = 200, body = PromptConfigOut), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
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
    let (config, routing) = split_snapshot(snapshot.ok_or(ApiError::NotFound("version"))?)?;
    let change = Change {
        prompt: Some(config),
        routing: Some(routing),
        restored_from: Some(version),
        action: "prompt_config.restored",
        fields: RESTORED_FIELDS,
    };
    let saved = save_version(&state, &auth, api_id, change).await?;
    Ok(Json(to_out(
        api_id,
        saved.version,
        saved.config,
        saved.updated_at,
    )))
}

/// A version's snapshot read back: the prompt config, and the routing it had (none when the
/// snapshot predates routing or had none).
fn split_snapshot(mut snapshot: serde_json::Value) -> ApiResult<(PromptConfig, Option<Routing>)> {
    // `PromptConfig` refuses unknown fields, so the routing comes out first.
    let routing = snapshot
        .as_object_mut()
        .and_then(|o| o.remove(ROUTING_KEY))
        .unwrap_or(serde_json::Value::Null);
    let routing: Option<Routing> = serde_json::from_value(routing).map_err(ApiError::internal)?;
    let config: PromptConfig = serde_json::from_value(snapshot).map_err(ApiError::internal)?;
    Ok((config, routing))
}

/// The key of a version's snapshot that holds the routing beside the prompt config's fields.
const ROUTING_KEY: &str = "routing";

/// What a new config version changes; what it leaves out stays as it is.
pub(crate) struct Change {
    /// The prompt config to store; `None` keeps the current one.
    pub prompt: Option<PromptConfig>,
    /// The routing to store (`Some(None)` for none); `None` keeps the current one.
    pub routing: Option<Option<Routing>>,
    /// The version this change restores, if it is a restore.
    pub restored_from: Option<i32>,
    /// The audit action, and the fields its details list as changed.
    pub action: &'static str,
    pub fields: &'static [&'static str],
}

/// A version as written.
pub(crate) struct Saved {
    pub version: i32,
    pub config: PromptConfig,
    pub routing: Option<Routing>,
    pub updated_at: DateTime<Utc>,
    /// The API's own provider and model: its routing when it has none.
    pub provider_id: Uuid,
    pub model: String,
}

impl Saved {
    /// The routing the gateway follows for this API now.
    pub fn effective_routing(&self) -> Routing {
        self.routing
            .clone()
            .unwrap_or_else(|| Routing::single(self.provider_id, &self.model))
    }
}

/// Writes a change to the prompt config or the routing as the next version, in one transaction
/// that locks the API's row: the current prompt config (the row made, empty, if the API has
/// none), the API's routing, a `config_versions` row whose snapshot is the prompt config plus
/// `"routing"` (the object, or null), and the audit row. Then invalidates the gateways' records
/// of the API and fires `config.updated`.
pub(crate) async fn save_version(
    state: &AppState,
    auth: &Auth,
    api_id: Uuid,
    change: Change,
) -> ApiResult<Saved> {
    let mut tx = state.db.begin().await?;
    owned_api(&mut *tx, auth.user_id, api_id).await?;
    // The routing's providers are locked before the API's row, in the order a provider's
    // delete takes them (its row, then the APIs that refer to it), so the two cannot deadlock;
    // the lock keeps a provider from being deleted while it becomes a target.
    if let Some(Some(routing)) = &change.routing {
        lock_providers(&mut tx, auth.user_id, routing, change.restored_from).await?;
    }
    // The lock on the API's row serialises writers, including the very first one.
    let locked: Option<(Uuid, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT provider_id, model, routing FROM wrapped_apis WHERE id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(api_id)
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (provider_id, model, stored_routing) = locked.ok_or(ApiError::NotFound("wrapped API"))?;
    let routing = match change.routing {
        Some(routing) => {
            let value = routing
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(ApiError::internal)?;
            sqlx::query("UPDATE wrapped_apis SET routing = $2 WHERE id = $1")
                .bind(api_id)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            routing
        }
        None => stored_routing
            .map(serde_json::from_value)
            .transpose()
            .map_err(ApiError::internal)?,
    };
    let config = match change.prompt {
        Some(config) => config,
        None => current_config(&mut tx, api_id).await?,
    };
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
    let mut snapshot = serde_json::to_value(&config).map_err(ApiError::internal)?;
    if let Some(fields) = snapshot.as_object_mut() {
        fields.insert(
            ROUTING_KEY.to_owned(),
            serde_json::to_value(&routing).map_err(ApiError::internal)?,
        );
    }
    sqlx::query(
        "INSERT INTO config_versions (id, prompt_config_id, wrapped_api_id, version, config_snapshot, restored_from, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(config_id)
    .bind(api_id)
    .bind(version)
    .bind(&snapshot)
    .bind(change.restored_from)
    .bind(auth.user_id)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &Actor::from(auth),
        change.action,
        "wrapped_api",
        Some(api_id),
        serde_json::json!({
            "fields": change.fields, "version": version, "restored_from": change.restored_from,
        }),
    )
    .await?;
    tx.commit().await?;
    invalidate::wrapped_apis(state, &[api_id], Vec::new()).await;
    state.events.admin(
        EventType::ConfigUpdated,
        auth.user_id,
        api_id,
        serde_json::json!({"version": version, "restored_from": change.restored_from}),
    );
    Ok(Saved {
        version,
        config,
        routing,
        updated_at,
        provider_id,
        model,
    })
}

/// The stored prompt config, or the empty one when the API has none yet.
async fn current_config(conn: &mut PgConnection, api_id: Uuid) -> ApiResult<PromptConfig> {
    let row: Option<(String, String, String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT role, instructions, rules, behavior, tone, examples FROM prompt_configs WHERE wrapped_api_id = $1",
    )
    .bind(api_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((role, instructions, rules, behavior, tone, examples)) = row else {
        return Ok(PromptConfig::default());
    };
    Ok(PromptConfig {
        role,
        instructions,
        rules,
        behavior,
        tone,
        examples: serde_json::from_value(examples).map_err(ApiError::internal)?,
    })
}

/// Locks the routing's providers against deletion until the commit. A provider that is not the
/// caller's (or no longer exists) is a 404 for a routing sent, and a 409 naming it for a
/// version being restored.
async fn lock_providers(
    conn: &mut PgConnection,
    user_id: Uuid,
    routing: &Routing,
    restoring: Option<i32>,
) -> ApiResult<()> {
    let wanted = routing.provider_ids();
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM llm_providers WHERE id = ANY($1) AND user_id = $2 ORDER BY id FOR KEY SHARE",
    )
    .bind(&wanted)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    match wanted.into_iter().find(|id| !found.contains(id)) {
        None => Ok(()),
        Some(gone) => match restoring {
            Some(version) => Err(ApiError::Conflict(format!(
                "version {version} routes to provider {gone}, which no longer exists"
            ))),
            None => Err(ApiError::NotFound("provider")),
        },
    }
}
