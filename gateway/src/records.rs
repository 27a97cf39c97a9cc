//! The records the hot path reads: the key record (by the key's hash) and the wrapped API
//! record, in their stored form (Redis JSON, filled from PostgreSQL on a cold miss) and in their
//! loaded form (provider keys decrypted once, prompt compiled once, upstreams resolved once).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use uuid::Uuid;
use wrapx_core::{
    crypto::{provider_key_aad, MasterKeys},
    prompt::{CompiledPrompt, Example, PromptConfig},
    routing::Routing,
    types::{ProviderKind, SystemMessagePolicy},
};
use zeroize::Zeroizing;

use crate::{
    providers::{thinking::ThinkingConfig, ProviderDialect},
    upstream::UpstreamTarget,
};

/// What the gateway knows of one key. Never holds the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: Uuid,
    pub key_hash: String,
    pub wrapped_api_id: Uuid,
    pub user_id: Uuid,
    /// Active and not revoked.
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The per-key rate limit of a wrapped API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitRecord {
    pub limit: u32,
    pub window_seconds: u32,
}

/// A wrapped API as stored in Redis: the provider key stays encrypted there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub endpoint_id: String,
    pub active: bool,
    pub owner_active: bool,
    pub model: String,
    pub system_message_policy: SystemMessagePolicy,
    pub max_tokens_cap: Option<u32>,
    pub provider_id: Uuid,
    pub provider: ProviderKind,
    pub base_url: String,
    pub api_key_ciphertext: String,
    pub prompt: CompiledPrompt,
    /// OpenAI `tools` entries.
    pub tools: Vec<Value>,
    /// A `thinking` tool's settings: the provider's reasoning switch is turned on.
    #[serde(default)]
    pub thinking: Option<ThinkingConfig>,
    pub rate_limit: Option<RateLimitRecord>,
    pub config_version: Option<i32>,
    /// The API's routing, when it has one; without it the provider and model above are the
    /// one target.
    #[serde(default)]
    pub routing: Option<RoutingRecord>,
}

/// A routing as stored, with what the gateway needs of each target's provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    pub policy: Routing,
    /// The providers the targets name (each once); a target whose provider is missing here
    /// (deleted since) is left out.
    pub providers: Vec<ProviderRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub id: Uuid,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key_ciphertext: String,
}

/// A wrapped API ready for requests. Provider keys are decrypted once and wiped on drop.
pub struct LoadedApi {
    pub record: ApiRecord,
    /// The compiled system message and few-shot turns, as chat messages, in order.
    pub prefix_messages: Vec<Value>,
    /// Where attempts go: the routing's targets in their order, or the API's own provider and
    /// model alone. Never empty.
    pub targets: Vec<LoadedTarget>,
    /// The `/v1/models` answer.
    pub models_body: bytes::Bytes,
}

/// One provider and model an attempt can go to.
pub struct LoadedTarget {
    pub provider_id: Uuid,
    pub kind: ProviderKind,
    pub dialect: ProviderDialect,
    pub model: String,
    pub weight: u32,
    /// `Bearer <provider key>`, shared by the targets of one provider.
    pub authorization: Arc<Zeroizing<String>>,
    pub upstream: UpstreamTarget,
    /// Names the target in the shared cooldown state: the API, provider and model.
    pub cooldown_id: String,
}

impl LoadedApi {
    /// The routing's retry and cooldown settings; `None` without a routing (one attempt, no
    /// cooldowns: an API that does not use routing does not pay for it).
    pub fn routing(&self) -> Option<&Routing> {
        self.record.routing.as_ref().map(|r| &r.policy)
    }
}

impl std::fmt::Debug for LoadedApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedApi")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// Why a wrapped API could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the provider key does not decrypt: {0}")]
    Decrypt(#[from] wrapx_core::crypto::CryptoError),
    #[error("the provider base URL is unusable: {0}")]
    Upstream(String),
    #[error("no routing target could be loaded")]
    NoTarget,
}

impl LoadedApi {
    pub async fn load(
        record: ApiRecord,
        keys: &MasterKeys,
        allow_loopback: bool,
    ) -> Result<Arc<Self>, LoadError> {
        let own = ProviderRecord {
            id: record.provider_id,
            kind: record.provider,
            base_url: record.base_url.clone(),
            api_key_ciphertext: record.api_key_ciphertext.clone(),
        };
        let targets = match &record.routing {
            None => vec![
                load_target(
                    &record,
                    &own,
                    &record.model,
                    1,
                    keys,
                    allow_loopback,
                    &mut Vec::new(),
                )
                .await?,
            ],
            Some(routing) => {
                let mut loaded = Vec::with_capacity(routing.policy.targets.len());
                // Each provider's key is decrypted and its address resolved once.
                let mut seen = Vec::new();
                for t in &routing.policy.targets {
                    let Some(provider) = routing.providers.iter().find(|p| p.id == t.provider_id)
                    else {
                        tracing::warn!(wrapped_api_id = %record.id, provider_id = %t.provider_id, "a routing target's provider is gone: target left out");
                        continue;
                    };
                    // One target that cannot be loaded must not take the others down with it.
                    match load_target(
                        &record,
                        provider,
                        &t.model,
                        t.weight,
                        keys,
                        allow_loopback,
                        &mut seen,
                    )
                    .await
                    {
                        Ok(target) => loaded.push(target),
                        Err(e) => {
                            tracing::error!(wrapped_api_id = %record.id, provider_id = %t.provider_id, error = %e, "a routing target cannot be loaded: target left out")
                        }
                    }
                }
                if loaded.is_empty() {
                    return Err(LoadError::NoTarget);
                }
                loaded
            }
        };
        let prefix_messages = prefix_messages(&record.prompt);
        let models_body = json!({
            "object": "list",
            "data": [{"id": record.model, "object": "model", "created": 0, "owned_by": record.provider.as_str()}],
        })
        .to_string()
        .into();
        Ok(Arc::new(Self {
            record,
            prefix_messages,
            targets,
            models_body,
        }))
    }
}

/// A provider's key and address, loaded once per API load.
type LoadedProvider = (Uuid, Arc<Zeroizing<String>>, UpstreamTarget);

async fn load_target(
    record: &ApiRecord,
    provider: &ProviderRecord,
    model: &str,
    weight: u32,
    keys: &MasterKeys,
    allow_loopback: bool,
    seen: &mut Vec<LoadedProvider>,
) -> Result<LoadedTarget, LoadError> {
    let (authorization, upstream) = match seen.iter().find(|(id, ..)| *id == provider.id) {
        Some((_, authorization, upstream)) => (Arc::clone(authorization), upstream.clone()),
        None => {
            let plain = keys.decrypt(
                &provider.api_key_ciphertext,
                &provider_key_aad(provider.id, record.user_id),
            )?;
            let mut authorization = Zeroizing::new(String::with_capacity(7 + plain.len()));
            authorization.push_str("Bearer ");
            authorization.push_str(&String::from_utf8_lossy(&plain));
            let authorization = Arc::new(authorization);
            let upstream = UpstreamTarget::resolve(&provider.base_url, allow_loopback)
                .await
                .map_err(LoadError::Upstream)?;
            seen.push((provider.id, Arc::clone(&authorization), upstream.clone()));
            (authorization, upstream)
        }
    };
    Ok(LoadedTarget {
        provider_id: provider.id,
        kind: provider.kind,
        dialect: ProviderDialect::of(provider.kind),
        model: model.to_owned(),
        weight,
        authorization,
        upstream,
        cooldown_id: format!("{}:{}:{model}", record.id, provider.id),
    })
}

/// The system message first, then each example as a user turn and an assistant turn.
pub fn prefix_messages(prompt: &CompiledPrompt) -> Vec<Value> {
    let mut messages = Vec::with_capacity(1 + 2 * prompt.examples.len());
    if let Some(system) = &prompt.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for Example { user, assistant } in &prompt.examples {
        messages.push(json!({"role": "user", "content": user}));
        messages.push(json!({"role": "assistant", "content": assistant}));
    }
    messages
}

/// The key record from PostgreSQL; `None` when no key has this hash.
pub async fn key_from_db(db: &PgPool, key_hash: &str) -> sqlx::Result<Option<KeyRecord>> {
    let row = sqlx::query(
        "SELECT k.id, k.wrapped_api_id, w.user_id, k.is_active AND k.revoked_at IS NULL AS active, k.expires_at
         FROM api_keys k JOIN wrapped_apis w ON w.id = k.wrapped_api_id
         WHERE k.key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(KeyRecord {
            key_id: r.try_get("id")?,
            key_hash: key_hash.to_owned(),
            wrapped_api_id: r.try_get("wrapped_api_id")?,
            user_id: r.try_get("user_id")?,
            active: r.try_get("active")?,
            expires_at: r.try_get("expires_at")?,
        })
    })
    .transpose()
}

/// The wrapped API record from PostgreSQL; `None` when it was deleted.
pub async fn api_from_db(db: &PgPool, id: Uuid) -> sqlx::Result<Option<ApiRecord>> {
    let Some(r) = sqlx::query(
        r#"SELECT w.id, w.user_id, w.endpoint_id, w.model, w.is_active, u.is_active AS owner_active,
                  w.system_message_policy, w.max_tokens_cap, w.routing,
                  p.id AS provider_id, p.provider_name, p.api_base_url, p.api_key_ciphertext,
                  pc.role, pc.instructions, pc.rules, pc.behavior, pc.tone, pc.examples, pc.current_version,
                  rl."limit" AS rl_limit, rl.window_seconds AS rl_window
           FROM wrapped_apis w
           JOIN users u ON u.id = w.user_id
           JOIN llm_providers p ON p.id = w.provider_id
           LEFT JOIN prompt_configs pc ON pc.wrapped_api_id = w.id
           LEFT JOIN rate_limits rl ON rl.wrapped_api_id = w.id
           WHERE w.id = $1"#,
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let provider_name: String = r.try_get("provider_name")?;
    let provider: ProviderKind = provider_name
        .parse()
        .map_err(|e: wrapx_core::types::UnknownVariant| sqlx::Error::Decode(e.into()))?;
    let base_url: Option<String> = r.try_get("api_base_url")?;
    let base_url = base_url
        .or_else(|| provider.default_base_url().map(str::to_owned))
        .unwrap_or_default();
    let policy: String = r.try_get("system_message_policy")?;
    let examples: Option<Value> = r.try_get("examples")?;
    let examples: Vec<Example> = examples
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))?
        .unwrap_or_default();
    let text = |name: &str| -> sqlx::Result<String> {
        Ok(r.try_get::<Option<String>, _>(name)?.unwrap_or_default())
    };
    let prompt = PromptConfig {
        role: text("role")?,
        instructions: text("instructions")?,
        rules: text("rules")?,
        behavior: text("behavior")?,
        tone: text("tone")?,
        examples,
    }
    .compile();
    let cap: Option<i32> = r.try_get("max_tokens_cap")?;
    let rl_limit: Option<i32> = r.try_get("rl_limit")?;
    let rl_window: Option<i32> = r.try_get("rl_window")?;
    let stored = sqlx::query(
        "SELECT t.tool_name, t.tool_type, t.tool_config
         FROM wrapped_api_tools wat JOIN tools t ON t.id = wat.tool_id
         WHERE wat.wrapped_api_id = $1 ORDER BY t.tool_name",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let routing: Option<Value> = r.try_get("routing")?;
    let routing = match routing {
        Some(stored) => Some(routing_record(db, r.try_get("user_id")?, stored).await?),
        None => None,
    };
    let mut tools = Vec::new();
    let mut thinking = None;
    for t in stored {
        let (Ok(name), Ok(kind), Ok(config)) = (
            t.try_get::<String, _>("tool_name"),
            t.try_get::<String, _>("tool_type"),
            t.try_get::<Value, _>("tool_config"),
        ) else {
            continue;
        };
        if kind == "thinking" {
            thinking = Some(ThinkingConfig::from_tool_config(&config));
        } else if let Some(tool) = openai_tool(&name, &kind, config) {
            tools.push(tool);
        }
    }
    Ok(Some(ApiRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        endpoint_id: r.try_get("endpoint_id")?,
        active: r.try_get("is_active")?,
        owner_active: r.try_get("owner_active")?,
        model: r.try_get("model")?,
        system_message_policy: policy.parse().unwrap_or_default(),
        max_tokens_cap: cap.and_then(|c| u32::try_from(c).ok()),
        provider_id: r.try_get("provider_id")?,
        provider,
        base_url,
        api_key_ciphertext: r.try_get("api_key_ciphertext")?,
        prompt,
        tools,
        thinking,
        rate_limit: match (rl_limit, rl_window) {
            (Some(limit), Some(window)) => Some(RateLimitRecord {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                window_seconds: u32::try_from(window).unwrap_or(60),
            }),
            _ => None,
        },
        config_version: r.try_get("current_version")?,
        routing,
    }))
}

/// A stored routing with its targets' providers (the owner's only).
async fn routing_record(db: &PgPool, user_id: Uuid, stored: Value) -> sqlx::Result<RoutingRecord> {
    let policy: Routing =
        serde_json::from_value(stored).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let rows = sqlx::query(
        "SELECT id, provider_name, api_base_url, api_key_ciphertext FROM llm_providers
         WHERE id = ANY($1) AND user_id = $2",
    )
    .bind(policy.provider_ids())
    .bind(user_id)
    .fetch_all(db)
    .await?;
    let mut providers = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("provider_name")?;
        let kind: ProviderKind = name
            .parse()
            .map_err(|e: wrapx_core::types::UnknownVariant| sqlx::Error::Decode(e.into()))?;
        let base_url: Option<String> = row.try_get("api_base_url")?;
        providers.push(ProviderRecord {
            id: row.try_get("id")?,
            kind,
            base_url: base_url
                .or_else(|| kind.default_base_url().map(str::to_owned))
                .unwrap_or_default(),
            api_key_ciphertext: row.try_get("api_key_ciphertext")?,
        });
    }
    Ok(RoutingRecord { policy, providers })
}

/// A stored tool as an OpenAI Chat Completions `tools` entry. Only function tools exist in that
/// API; the other kinds (thinking, web search, code interpreter) are provider features the
/// providers issue maps, so they are left out here.
fn openai_tool(name: &str, kind: &str, config: Value) -> Option<Value> {
    if kind != "function" {
        return None;
    }
    let mut function = match config {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    // A config that already wraps itself as {"type":"function","function":{...}} is unwrapped.
    if let Some(Value::Object(inner)) = function.remove("function") {
        function = inner;
    }
    function.remove("type");
    function.insert("name".into(), Value::String(name.to_owned()));
    Some(json!({"type": "function", "function": function}))
}

/// Records for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An active OpenAI-kind API pinned to `pinned-model`, with no prompt, tools or limit.
    pub fn api_record() -> ApiRecord {
        ApiRecord {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            endpoint_id: "ep_x".into(),
            active: true,
            owner_active: true,
            model: "pinned-model".into(),
            system_message_policy: SystemMessagePolicy::Keep,
            max_tokens_cap: Some(100),
            provider_id: Uuid::nil(),
            provider: ProviderKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key_ciphertext: String::new(),
            prompt: CompiledPrompt::default(),
            tools: Vec::new(),
            thinking: None,
            rate_limit: None,
            config_version: None,
            routing: None,
        }
    }

    impl LoadedApi {
        /// A loaded API for `record` without decryption or resolution (upstream on port 1).
        pub fn for_tests(record: ApiRecord) -> Self {
            let target = LoadedTarget {
                provider_id: record.provider_id,
                kind: record.provider,
                dialect: ProviderDialect::of(record.provider),
                model: record.model.clone(),
                weight: 1,
                authorization: Arc::new(Zeroizing::new("Bearer test".to_owned())),
                upstream: crate::upstream::UpstreamTarget {
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                    tls: false,
                    sni: "127.0.0.1".into(),
                    host: "127.0.0.1:1".into(),
                    chat_path: "/v1/chat/completions".into(),
                    messages_path: "/v1/messages".into(),
                },
                cooldown_id: String::new(),
            };
            Self {
                record,
                prefix_messages: Vec::new(),
                targets: vec![target],
                models_body: bytes::Bytes::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn prefix_is_system_then_example_turns() {
        let prompt = CompiledPrompt {
            system: Some("You are a pirate.".into()),
            examples: vec![Example {
                user: "hi".into(),
                assistant: "arr".into(),
            }],
        };
        assert_eq!(
            prefix_messages(&prompt),
            vec![
                json!({"role": "system", "content": "You are a pirate."}),
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": "arr"}),
            ]
        );
        assert!(prefix_messages(&CompiledPrompt::default()).is_empty());
    }

    #[test]
    fn function_tools_become_openai_tools() {
        let t = openai_tool(
            "lookup",
            "function",
            json!({"description": "d", "parameters": {"type": "object"}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}}})
        );
        assert!(openai_tool("think", "thinking", json!({})).is_none());
    }
}
