//! Accounts and sessions: register, login (throttled, timing-safe), refresh (rotating, with
//! reuse detection), logout, the caller's sessions and `GET /me`.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Duration, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wrapx_core::{keys::generate_token, password, types::Email};

use crate::{
    audit::{self, Actor},
    auth::{Auth, Client},
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathParams, QueryParams},
    pagination::{page, HasId, Page, PageParams},
    state::AppState,
};

/// Failed logins per account, and per client address, before 429 for the rest of the window.
pub const ACCOUNT_MAX_FAILURES: i64 = 5;
pub const ADDRESS_MAX_FAILURES: i64 = 20;
pub const FAILURE_WINDOW_SECS: i64 = 900;
const ACCESS_PREFIX: &str = "wxa_";
const REFRESH_PREFIX: &str = "wxr_";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires; refresh before then.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub is_active: bool,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for User {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const USER_COLUMNS: &str =
    "id, email::text AS email, name, is_active, is_admin, created_at, updated_at";

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Session {
    pub id: Uuid,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
    /// Whether this is the session of the token making the request.
    #[sqlx(default)]
    pub current: bool,
}

impl HasId for Session {
    fn id(&self) -> Uuid {
        self.id
    }
}

fn check_password_shape(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::validation("password must be 8 to 128 characters"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, body = User), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    client: Client,
    JsonBody(body): JsonBody<RegisterBody>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = Email::parse(&body.email)
        .ok_or_else(|| ApiError::validation("email is not a valid address"))?;
    check_password_shape(&body.password)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name must be 1 to 200 characters"));
    }
    let hash = hash_password(body.password).await?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    let user: User = sqlx::query_as(&format!(
        "INSERT INTO users (id, email, password_hash, name) VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(email.as_str())
    .bind(hash)
    .bind(&name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict("an account with this email already exists".into()),
        other => other,
    })?;
    let actor = Actor {
        user_id: Some(id),
        client,
    };
    audit::record(
        &mut tx,
        &actor,
        "user.registered",
        "user",
        Some(id),
        serde_json::json!({"fields": ["email", "name", "password"]}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Hashes off the async executor: argon2id is deliberately slow.
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || password::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Json<TokenPair>> {
    // The throttle is keyed by the normalised email whether or not the account exists, so its
    // answers reveal nothing either.
    let normalised = body.email.trim().to_lowercase();
    let account_key = format!(
        "{}login-fail:acct:{}",
        state.names.prefix(),
        state.hasher.hash_token(&normalised).to_hex()
    );
    let address_key = client
        .ip
        .map(|ip| format!("{}login-fail:addr:{ip}", state.names.prefix()));
    throttle(&state, &account_key, address_key.as_deref()).await?;

    let row: Option<(Uuid, String, bool)> = match Email::parse(&body.email) {
        Some(email) => {
            sqlx::query_as("SELECT id, password_hash, is_active FROM users WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(&state.db)
                .await?
        }
        None => None,
    };
    let password = body.password;
    // Same work either way: a real verification, or a dummy one for an unknown email.
    let verified = tokio::task::spawn_blocking(move || match row {
        Some((id, hash, active)) => {
            password::verify_password(&password, &hash).then_some((id, active))
        }
        None => {
            password::verify_dummy(&password);
            None
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let user_id = match verified {
        Some((id, true)) => id,
        _ => {
            record_failure(&state, &account_key, address_key.as_deref()).await;
            return Err(ApiError::Unauthorized("invalid email or password"));
        }
    };
    clear_failures(&state, &account_key).await;

    let (pair, hashes) = new_tokens(&state);
    let session_id = Uuid::now_v7();
    let refresh_expires =
        Utc::now() + Duration::seconds(secs(state.settings.admin.refresh_token_ttl_secs));
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, refresh_token_hash, expires_at, \
         refresh_expires_at, ip_address, user_agent, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::inet, $8, now())",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(&hashes.0)
    .bind(&hashes.1)
    .bind(pair.expires_at)
    .bind(refresh_expires)
    .bind(client.ip.map(|ip| ip.to_string()))
    .bind(client.user_agent.as_deref())
    .execute(&mut *tx)
    .await?;
    let actor = Actor {
        user_id: Some(user_id),
        client,
    };
    audit::record(
        &mut tx,
        &actor,
        "session.created",
        "session",
        Some(session_id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(pair))
}

fn secs(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 1000)
}

/// A fresh access and refresh token, and their hashes (what is stored).
fn new_tokens(state: &AppState) -> (TokenPair, (String, String)) {
    let access = generate_token(ACCESS_PREFIX);
    let refresh = generate_token(REFRESH_PREFIX);
    let hashes = (
        state.hasher.hash_token(&access).to_hex(),
        state.hasher.hash_token(&refresh).to_hex(),
    );
    let expires_at =
        Utc::now() + Duration::seconds(secs(state.settings.admin.access_token_ttl_secs));
    (
        TokenPair {
            access_token: access,
            refresh_token: refresh,
            expires_at,
        },
        hashes,
    )
}

/// 429 while the account's or the address's failures are over their limit. Redis being down
/// fails open (logged): refusing every login would be worse than a slower attacker.
async fn throttle(state: &AppState, account_key: &str, address_key: Option<&str>) -> ApiResult<()> {
    let checks = [
        (Some(account_key), ACCOUNT_MAX_FAILURES),
        (address_key, ADDRESS_MAX_FAILURES),
    ];
    let mut conn = match state.redis.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "login throttle unavailable");
            return Ok(());
        }
    };
    for (key, max) in checks {
        let Some(key) = key else { continue };
        let count: Result<Option<i64>, _> = conn.get(key).await;
        match count {
            Ok(Some(n)) if n >= max => {
                let ttl: i64 = conn.ttl(key).await.unwrap_or(FAILURE_WINDOW_SECS);
                return Err(ApiError::TooManyRequests {
                    retry_after_secs: u64::try_from(ttl.max(1)).unwrap_or(1),
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "login throttle unavailable"),
        }
    }
    Ok(())
}

async fn record_failure(state: &AppState, account_key: &str, address_key: Option<&str>) {
    let Ok(mut conn) = state.redis.get().await else {
        return;
    };
    for key in [Some(account_key), address_key].into_iter().flatten() {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(key, 1)
            .ignore()
            .expire(key, FAILURE_WINDOW_SECS)
            .ignore();
        let result: Result<(), _> = pipe.query_async(&mut *conn).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording a failed login");
        }
    }
}

async fn clear_failures(state: &AppState, account_key: &str) {
    if let Ok(mut conn) = state.redis.get().await {
        let _: Result<(), _> = conn.del(account_key).await;
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    client: Client,
    JsonBody(body): JsonBody<RefreshBody>,
) -> ApiResult<Json<TokenPair>> {
    let presented = state.hasher.hash_token(&body.refresh_token).to_hex();
    let (pair, hashes) = new_tokens(&state);
    let mut tx = state.db.begin().await?;
    // One conditional UPDATE: concurrent refreshes with one token serialise on the row lock and
    // only the first still matches `refresh_token_hash = $1`.
    let rotated: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE sessions SET token_hash = $2, refresh_token_hash = $3, \
         previous_refresh_token_hash = refresh_token_hash, expires_at = $4, last_used_at = now() \
         WHERE refresh_token_hash = $1 AND is_active AND refresh_expires_at > now() \
           AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND u.is_active) \
         RETURNING id, user_id",
    )
    .bind(&presented)
    .bind(&hashes.0)
    .bind(&hashes.1)
    .bind(pair.expires_at)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((session_id, user_id)) = rotated {
        let actor = Actor {
            user_id: Some(user_id),
            client,
        };
        audit::record(
            &mut tx,
            &actor,
            "session.refreshed",
            "session",
            Some(session_id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        return Ok(Json(pair));
    }
    // A spent refresh token presented again: someone holds a copy. Revoke the session.
    let reused: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE sessions SET is_active = false, revoked_reason = 'refresh_token_reuse' \
         WHERE previous_refresh_token_hash = $1 AND is_active RETURNING id, user_id",
    )
    .bind(&presented)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((session_id, user_id)) = reused {
        tracing::warn!(%session_id, "refresh token reuse: session revoked");
        let actor = Actor {
            user_id: Some(user_id),
            client,
        };
        audit::record(
            &mut tx,
            &actor,
            "session.revoked",
            "session",
            Some(session_id),
            serde_json::json!({"reason": "refresh_token_reuse"}),
        )
        .await?;
    }
    tx.commit().await?;
    Err(ApiError::Unauthorized(
        "the refresh token is invalid, expired or already used",
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, auth: Auth) -> ApiResult<StatusCode> {
    revoke_session(&state, &auth, auth.session_id, "logout").await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_session(
    state: &AppState,
    auth: &Auth,
    session_id: Uuid,
    reason: &str,
) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    let done = sqlx::query(
        "UPDATE sessions SET is_active = false, revoked_reason = $3 WHERE id = $1 AND user_id = $2 AND is_active",
    )
    .bind(session_id)
    .bind(auth.user_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("session"));
    }
    audit::record(
        &mut tx,
        &Actor::from(auth),
        "session.revoked",
        "session",
        Some(session_id),
        serde_json::json!({"reason": reason}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Session>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(params): QueryParams<PageParams>,
) -> ApiResult<Json<Page<Session>>> {
    let limit = params.limit()?;
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT id, host(ip_address) AS ip_address, user_agent, created_at, last_used_at, expires_at, \
         refresh_expires_at, (id = $4) AS current FROM sessions \
         WHERE user_id = $1 AND is_active AND refresh_expires_at > now() AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(auth.user_id)
    .bind(params.cursor)
    .bind(limit + 1)
    .bind(auth.session_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit)))
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_session(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_session(&state, &auth, id, "revoked_by_user").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<User>> {
    let user: User = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(auth.user_id)
        .fetch_one(&state.db)
        .await?;
    Ok(Json(user))
}
