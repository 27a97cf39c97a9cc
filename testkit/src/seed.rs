//! Rows seeded as the admin API would write them: the one place tests hold the seed SQL.
//!
//! Each builder has defaults that make a valid row and setters for what a test cares about;
//! `insert` writes it and returns what the test needs back (ids, the plaintext key).

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wrapx_core::{
    crypto::{provider_key_aad, webhook_secret_aad, MasterKeys},
    keys::{ApiKey, KeyHasher},
    secret::SecuritySettings,
    types::EndpointId,
};

/// The plaintext of every provider key the kit encrypts.
pub const PROVIDER_KEY: &str = "sk-provider-secret-1234";

/// A user with a project, a provider and a wrapped API: the smallest account that owns traffic.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub provider_id: Uuid,
    pub api_id: Uuid,
}

/// Seeds an [`Account`] with default rows (its provider key is never decrypted).
pub async fn account(db: &PgPool) -> Account {
    let user_id = User::new().insert(db).await;
    let project_id = project(db, user_id).await;
    let provider_id = Provider::new(user_id).insert(db).await;
    let api = WrappedApi::new(user_id, project_id, provider_id)
        .insert(db)
        .await;
    Account {
        user_id,
        project_id,
        provider_id,
        api_id: api.id,
    }
}

/// A `users` row (an account's owner); its email is unique unless set.
#[derive(Debug, Clone)]
pub struct User {
    id: Uuid,
    email: Option<String>,
}

impl User {
    pub fn new() -> Self {
        Self {
            id: Uuid::now_v7(),
            email: None,
        }
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.to_owned());
        self
    }

    pub async fn insert(self, db: &PgPool) -> Uuid {
        let email = self
            .email
            .unwrap_or_else(|| format!("u{}@example.com", self.id.simple()));
        sqlx::query("INSERT INTO users (id, email, password_hash, name) VALUES ($1, $2, 'x', 'n')")
            .bind(self.id)
            .bind(email)
            .execute(db)
            .await
            .unwrap();
        self.id
    }
}

impl Default for User {
    fn default() -> Self {
        Self::new()
    }
}

/// A project of `user`.
pub async fn project(db: &PgPool, user: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO projects (id, user_id, name) VALUES ($1, $2, 'p')")
        .bind(id)
        .bind(user)
        .execute(db)
        .await
        .unwrap();
    id
}

/// An `llm_providers` row. By default of kind `openai` with a placeholder ciphertext;
/// [`Provider::encrypted`] stores [`PROVIDER_KEY`] encrypted as the admin API does.
#[derive(Debug, Clone)]
pub struct Provider {
    user: Uuid,
    kind: String,
    base_url: Option<String>,
    security: Option<SecuritySettings>,
}

impl Provider {
    pub fn new(user: Uuid) -> Self {
        Self {
            user,
            kind: "openai".to_owned(),
            base_url: None,
            security: None,
        }
    }

    /// `openai`, `openai_compatible`, `anthropic`, …
    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = kind.to_owned();
        self
    }

    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = Some(url.to_owned());
        self
    }

    /// Encrypts [`PROVIDER_KEY`] under `security`'s master key, bound to this row.
    pub fn encrypted(mut self, security: &SecuritySettings) -> Self {
        self.security = Some(security.clone());
        self
    }

    pub async fn insert(self, db: &PgPool) -> Uuid {
        let id = Uuid::now_v7();
        let ciphertext = match &self.security {
            Some(security) => MasterKeys::from_settings(security)
                .unwrap()
                .encrypt(PROVIDER_KEY.as_bytes(), &provider_key_aad(id, self.user))
                .unwrap(),
            None => "wxenc1:k:x".to_owned(),
        };
        sqlx::query("INSERT INTO llm_providers (id, user_id, provider_name, api_key_ciphertext, api_key_hint, api_base_url) VALUES ($1, $2, $3, $4, '1234', $5)")
            .bind(id)
            .bind(self.user)
            .bind(&self.kind)
            .bind(ciphertext)
            .bind(&self.base_url)
            .execute(db)
            .await
            .unwrap();
        id
    }
}

/// A `wrapped_apis` row: model `gpt-4o-mini`, a fresh endpoint id, the default system
/// message policy, unless set.
#[derive(Debug, Clone)]
pub struct WrappedApi {
    user: Uuid,
    project: Uuid,
    provider: Uuid,
    name: String,
    model: String,
    endpoint: Option<String>,
    policy: Option<String>,
}

/// A seeded wrapped API.
#[derive(Debug, Clone)]
pub struct SeededApi {
    pub id: Uuid,
    /// Its `endpoint_id`, the path segment clients call it by.
    pub endpoint: String,
}

impl WrappedApi {
    pub fn new(user: Uuid, project: Uuid, provider: Uuid) -> Self {
        Self {
            user,
            project,
            provider,
            name: "w".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            endpoint: None,
            policy: None,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = model.to_owned();
        self
    }

    /// A given endpoint id (`ep_` and 20 characters), to test its uniqueness.
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    /// `system_message_policy`: `keep`, `drop`, …
    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = Some(policy.to_owned());
        self
    }

    pub async fn insert(self, db: &PgPool) -> SeededApi {
        let id = Uuid::now_v7();
        let endpoint = self
            .endpoint
            .unwrap_or_else(|| EndpointId::generate().as_str().to_owned());
        sqlx::query("INSERT INTO wrapped_apis (id, user_id, project_id, provider_id, name, endpoint_id, model, system_message_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, 'keep'))")
            .bind(id)
            .bind(self.user)
            .bind(self.project)
            .bind(self.provider)
            .bind(&self.name)
            .bind(&endpoint)
            .bind(&self.model)
            .bind(&self.policy)
            .execute(db)
            .await
            .unwrap();
        SeededApi { id, endpoint }
    }
}

/// A rate limit of `limit` requests per `window_seconds` on wrapped API `api`.
pub async fn rate_limit(db: &PgPool, user: Uuid, api: Uuid, limit: i32, window_seconds: i32) {
    sqlx::query(r#"INSERT INTO rate_limits (id, user_id, wrapped_api_id, "limit", window_seconds) VALUES ($1, $2, $3, $4, $5)"#)
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(api)
        .bind(limit)
        .bind(window_seconds)
        .execute(db)
        .await
        .unwrap();
}

/// An `api_keys` row for a wrapped API, stored as its keyed hash.
#[derive(Debug, Clone)]
pub struct Key {
    api: Uuid,
    expires_at: Option<DateTime<Utc>>,
}

/// A seeded key: the plaintext a client sends, its row id and its stored hash.
#[derive(Debug, Clone)]
pub struct SeededKey {
    pub key: String,
    pub id: Uuid,
    pub hash: String,
}

impl Key {
    pub fn new(api: Uuid) -> Self {
        Self {
            api,
            expires_at: None,
        }
    }

    pub fn expires_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.expires_at = at;
        self
    }

    /// Hashes with `security`'s pepper, as the gateway will when it looks the key up.
    pub async fn insert(self, db: &PgPool, security: &SecuritySettings) -> SeededKey {
        let key = ApiKey::generate();
        let hash = KeyHasher::from_settings(security)
            .unwrap()
            .hash_key(&key)
            .to_hex();
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO api_keys (id, wrapped_api_id, key_hash, key_hint, key_name, expires_at) VALUES ($1, $2, $3, $4, 'k', $5)")
            .bind(id)
            .bind(self.api)
            .bind(&hash)
            .bind(key.hint())
            .bind(self.expires_at)
            .execute(db)
            .await
            .unwrap();
        SeededKey {
            key: key.expose().to_owned(),
            id,
            hash,
        }
    }
}

/// A prompt config for `api` from a JSON object with the fields `role`, `instructions`,
/// `rules`, `behavior`, `tone` (strings, empty when absent) and `examples` (an array).
pub async fn prompt_config(db: &PgPool, api: Uuid, config: &Value) -> Uuid {
    let id = Uuid::now_v7();
    let text = |field: &str| config[field].as_str().unwrap_or("").to_owned();
    sqlx::query("INSERT INTO prompt_configs (id, wrapped_api_id, role, instructions, rules, behavior, tone, examples) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(id)
        .bind(api)
        .bind(text("role"))
        .bind(text("instructions"))
        .bind(text("rules"))
        .bind(text("behavior"))
        .bind(text("tone"))
        .bind(config.get("examples").cloned().unwrap_or(json!([])))
        .execute(db)
        .await
        .unwrap();
    id
}

/// A function tool of `user` named `name`.
pub async fn tool(db: &PgPool, user: Uuid, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tools (id, user_id, tool_name, tool_type) VALUES ($1, $2, $3, 'function')",
    )
    .bind(id)
    .bind(user)
    .bind(name)
    .execute(db)
    .await
    .unwrap();
    id
}

/// Attaches `tool` to wrapped API `api`; the database's answer, to test the constraint.
pub async fn attach_tool(db: &PgPool, api: Uuid, tool: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO wrapped_api_tools (id, wrapped_api_id, tool_id) VALUES ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(api)
        .bind(tool)
        .execute(db)
        .await
        .map(drop)
}

/// An active webhook of `api` with a fresh `whsec_` secret, encrypted as the admin API stores
/// it. Returns its id and the plaintext secret.
pub async fn webhook(
    db: &PgPool,
    security: &SecuritySettings,
    api: Uuid,
    url: &str,
    events: &[&str],
) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let secret = format!("whsec_{}", STANDARD.encode(Uuid::new_v4().as_bytes()));
    let ciphertext = MasterKeys::from_settings(security)
        .unwrap()
        .encrypt(secret.as_bytes(), &webhook_secret_aad(id, api))
        .unwrap();
    sqlx::query("INSERT INTO webhooks (id, wrapped_api_id, url, secret_ciphertext, events) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(api)
        .bind(url)
        .bind(ciphertext)
        .bind(json!(events))
        .execute(db)
        .await
        .unwrap();
    (id, secret)
}
