//! The routes, one module per resource, and the checks they share.

pub mod audit_logs;
pub mod auth;
pub mod billing;
pub mod chat;
pub mod feedback;
pub mod keys;
pub mod logs;
pub mod notifications;
pub mod operators;
pub mod projects;
pub mod prompt_config;
pub mod providers;
pub mod rate_limits;
pub mod routing;
pub mod tools;
pub mod webhooks;
pub mod wrapped_apis;

use std::net::IpAddr;

use axum::{
    routing::{get, post, put},
    Router,
};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Every route of the contract under `/api/v1`.
pub fn api() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/sessions", get(auth::list_sessions))
        .route(
            "/auth/sessions/{id}",
            axum::routing::delete(auth::delete_session),
        )
        .route("/me", get(auth::me))
        .route("/projects", get(projects::list).post(projects::create))
        .route(
            "/projects/{id}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route("/providers", get(providers::list).post(providers::create))
        .route(
            "/providers/{id}",
            get(providers::get)
                .patch(providers::update)
                .delete(providers::delete),
        )
        .route(
            "/wrapped-apis",
            get(wrapped_apis::list).post(wrapped_apis::create),
        )
        .route(
            "/wrapped-apis/{id}",
            get(wrapped_apis::get)
                .patch(wrapped_apis::update)
                .delete(wrapped_apis::delete),
        )
        .route(
            "/wrapped-apis/{id}/keys",
            get(keys::list).post(keys::create),
        )
        .route(
            "/wrapped-apis/{id}/keys/{key_id}",
            axum::routing::delete(keys::revoke),
        )
        .route(
            "/wrapped-apis/{id}/prompt-config",
            get(prompt_config::get).put(prompt_config::put),
        )
        .route(
            "/wrapped-apis/{id}/prompt-config/versions",
            get(prompt_config::versions),
        )
        .route(
            "/wrapped-apis/{id}/prompt-config/versions/{version}/restore",
            post(prompt_config::restore),
        )
        .route(
            "/wrapped-apis/{id}/routing",
            get(routing::get).put(routing::put).delete(routing::delete),
        )
        .route("/tools", get(tools::list).post(tools::create))
        .route(
            "/tools/{id}",
            get(tools::get).patch(tools::update).delete(tools::delete),
        )
        .route("/wrapped-apis/{id}/tools", get(tools::list_attached))
        .route(
            "/wrapped-apis/{id}/tools/{tool_id}",
            put(tools::attach).delete(tools::detach),
        )
        .route(
            "/wrapped-apis/{id}/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route(
            "/wrapped-apis/{id}/rate-limit",
            get(rate_limits::get).put(rate_limits::put),
        )
        .route("/wrapped-apis/{id}/logs", get(logs::list))
        .route("/wrapped-apis/{id}/usage", get(logs::usage))
        .route(
            "/wrapped-apis/{id}/chat",
            get(chat::list).post(chat::create),
        )
        .route("/notifications", get(notifications::list))
        .route("/notifications/{id}/read", post(notifications::mark_read))
        .route("/billing", get(billing::get))
        .route("/billing/plan", put(billing::put_plan))
        .route("/audit-logs", get(audit_logs::list))
        .route(
            "/wrapped-apis/{id}/feedback",
            get(feedback::list).post(feedback::create),
        )
        .route("/admin/users", get(operators::list))
        .route("/admin/users/{id}", axum::routing::patch(operators::update))
}

/// 404 unless the wrapped API exists and is the caller's.
pub async fn owned_api<'e>(db: impl PgExecutor<'e>, user_id: Uuid, api_id: Uuid) -> ApiResult<()> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM wrapped_apis WHERE id = $1 AND user_id = $2")
            .bind(api_id)
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    found.map(|_| ()).ok_or(ApiError::NotFound("wrapped API"))
}

/// A required text field of `min..=max` characters.
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = value.chars().count();
    if n < min || n > max || (min > 0 && value.trim().is_empty()) {
        return Err(ApiError::validation(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    Ok(())
}

/// An optional text field of at most `max` characters.
pub fn check_opt_len(field: &str, value: Option<&str>, max: usize) -> ApiResult<()> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::validation(format!(
            "{field} must be at most {max} characters"
        ))),
        _ => Ok(()),
    }
}

/// An absolute http(s) URL without credentials, at most 2,000 characters; loopback hosts only
/// when the configuration allows them.
pub fn parse_http_url(field: &str, raw: &str, allow_loopback: bool) -> ApiResult<String> {
    let bad = |why: &str| ApiError::validation(format!("{field}: {why}"));
    if raw.len() > 2000 {
        return Err(bad("at most 2000 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| bad("not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold credentials"));
    }
    let Some(host) = url.host() else {
        return Err(bad("a host is required"));
    };
    let loopback = match host {
        url::Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    };
    if loopback && !allow_loopback {
        return Err(bad("loopback hosts are not allowed"));
    }
    // Stored as given (validated), so the gateway joins paths exactly as the user wrote it.
    Ok(raw.to_owned())
}
