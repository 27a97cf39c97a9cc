//! Test harness: the real application on port 0 against its own PostgreSQL database, Redis
//! prefix and RabbitMQ vhost, driven over real HTTP.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wrapx_core::config::Settings;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    pub settings: Settings,
    pub stop: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Settings on a fresh migrated database, vhost and Redis prefix, listening on port 0.
pub async fn settings() -> Settings {
    wrapx_testkit::backends::everything().await.1
}

pub async fn spawn() -> TestApp {
    spawn_with(settings().await).await
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    let app = wrapx_admin::Application::build(settings.clone())
        .await
        .expect("build the app");
    let port = app.port();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let server =
        tokio::spawn(async move { app.run_until(async move { token.cancelled().await }).await });
    let db = PgPool::connect(settings.database.url.expose())
        .await
        .unwrap();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        db,
        settings,
        stop,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One JSON call under `/api/v1`; the answer's status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v1{path}")));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Registers and logs in; returns (user id, access token, refresh token).
    pub async fn account(&self, email: &str) -> (String, String, String) {
        let (status, user) = self
            .call(
                Method::POST,
                "/auth/register",
                None,
                Some(json!({"email": email, "password": PASSWORD, "name": "Test User"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let (status, tokens) = self.login(email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        (
            user["id"].as_str().unwrap().to_owned(),
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
    }
}

pub const PASSWORD: &str = "correct horse battery staple";
pub const PROVIDER_KEY: &str = "sk-test-provider-secret-0123456789abcdef";

/// Everything one account builds for the "done when" scenario.
#[derive(Debug, Clone)]
pub struct Built {
    pub project: String,
    pub provider: String,
    pub api: String,
    pub tool: String,
    pub webhook: String,
    pub webhook_secret: String,
    pub key_id: String,
    pub key: String,
    pub session: String,
    pub notification: String,
}

/// Asserts a status and returns the body.
pub fn expect(status: StatusCode, answer: (StatusCode, Value)) -> Value {
    assert_eq!(answer.0, status, "{}", answer.1);
    answer.1
}

/// Builds a complete wrapped API for one account over HTTP.
pub async fn build_everything(app: &TestApp, token: &str, user_id: &str, tag: &str) -> Built {
    let project = expect(
        StatusCode::CREATED,
        app.post("/projects", token, json!({"name": format!("p-{tag}")}))
            .await,
    );
    let provider = expect(StatusCode::CREATED, app.post("/providers", token, json!({
        "provider_name": "openai_compatible", "api_key": format!("{PROVIDER_KEY}{tag}"), "api_base_url": "http://127.0.0.1:9/v1"
    })).await);
    assert_eq!(
        provider["api_key_hint"],
        json!(
            format!("{PROVIDER_KEY}{tag}")[format!("{PROVIDER_KEY}{tag}").len() - 4..].to_owned()
        )
    );
    assert!(provider.get("api_key").is_none());
    let api = expect(StatusCode::CREATED, app.post("/wrapped-apis", token, json!({
        "name": format!("api-{tag}"), "project_id": project["id"], "provider_id": provider["id"], "model": "gpt-4o-mini"
    })).await);
    assert!(api["endpoint_id"].as_str().unwrap().starts_with("ep_"));
    let api_id = api["id"].as_str().unwrap().to_owned();
    let v1 = expect(StatusCode::OK, app.call(Method::PUT, &format!("/wrapped-apis/{api_id}/prompt-config"), Some(token), Some(json!({
        "role": "a helpful bot", "instructions": "answer briefly", "rules": "", "behavior": "", "tone": "friendly",
        "examples": [{"user": "hi", "assistant": "hello"}]
    }))).await);
    assert_eq!(v1["version"], 1);
    let v2 = expect(
        StatusCode::OK,
        app.call(
            Method::PUT,
            &format!("/wrapped-apis/{api_id}/prompt-config"),
            Some(token),
            Some(json!({
                "role": "a terse bot"
            })),
        )
        .await,
    );
    assert_eq!(v2["version"], 2);
    let v3 = expect(
        StatusCode::OK,
        app.post(
            &format!("/wrapped-apis/{api_id}/prompt-config/versions/1/restore"),
            token,
            json!(null),
        )
        .await,
    );
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["role"], "a helpful bot");
    let tool = expect(StatusCode::CREATED, app.post("/tools", token, json!({
        "tool_name": format!("lookup_{tag}"), "tool_type": "function", "tool_config": {"description": "looks things up"}
    })).await);
    let tool_id = tool["id"].as_str().unwrap().to_owned();
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::PUT,
            &format!("/wrapped-apis/{api_id}/tools/{tool_id}"),
            Some(token),
            None,
        )
        .await,
    );
    let webhook = expect(
        StatusCode::CREATED,
        app.post(
            &format!("/wrapped-apis/{api_id}/webhooks"),
            token,
            json!({
                "url": "http://127.0.0.1:9/hook", "events": ["key.created", "config.updated"]
            }),
        )
        .await,
    );
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    expect(
        StatusCode::OK,
        app.call(
            Method::PUT,
            &format!("/wrapped-apis/{api_id}/rate-limit"),
            Some(token),
            Some(json!({"limit": 100, "window_seconds": 60})),
        )
        .await,
    );
    let key = expect(
        StatusCode::CREATED,
        app.post(
            &format!("/wrapped-apis/{api_id}/keys"),
            token,
            json!({"key_name": "prod"}),
        )
        .await,
    );
    let key_value = key["key"].as_str().unwrap().to_owned();
    assert!(key_value.starts_with("wxk_"));
    expect(
        StatusCode::CREATED,
        app.post(
            &format!("/wrapped-apis/{api_id}/chat"),
            token,
            json!({"message": "hello there"}),
        )
        .await,
    );
    expect(
        StatusCode::CREATED,
        app.post(
            &format!("/wrapped-apis/{api_id}/feedback"),
            token,
            json!({"rating": 5, "comment": "great"}),
        )
        .await,
    );
    let (_, sessions) = app.get("/auth/sessions", token).await;
    let session = sessions["data"][0]["id"].as_str().unwrap().to_owned();
    // Notifications are raised by the worker; insert one as it would.
    let notification = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO notifications (id, user_id, wrapped_api_id, type, title, message) VALUES ($1, $2::uuid, $3::uuid, 'webhook.failed', 't', 'm')")
        .bind(notification)
        .bind(user_id)
        .bind(&api_id)
        .execute(&app.db)
        .await
        .unwrap();
    Built {
        project: project["id"].as_str().unwrap().to_owned(),
        provider: provider["id"].as_str().unwrap().to_owned(),
        api: api_id,
        tool: tool_id,
        webhook: webhook["id"].as_str().unwrap().to_owned(),
        webhook_secret: secret,
        key_id: key["id"].as_str().unwrap().to_owned(),
        key: key_value,
        session,
        notification: notification.to_string(),
    }
}
