//! Who is calling: the client's address and user agent, and the `Authorization: Bearer`
//! access-token extractor that every route outside register, login and refresh takes.
//!
//! The token is hashed with the keyed token hash and looked up in `sessions` joined with
//! `users`, so a revoked or expired session, or a deactivated user, stops working at once.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// The calling client as far as the audit trail and the login throttle need it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The TCP peer's address. `X-Forwarded-For` is not trusted: nothing in the default
    /// deployment vouches for it, and trusting it would let a client pick whose limit counts.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(client_of(parts))
    }
}

fn client_of(parts: &Parts) -> Client {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(1000).collect());
    Client { ip, user_agent }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub is_admin: bool,
    pub client: Client,
}

impl Auth {
    /// Operators only: 403 for everyone else.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The token of an `Authorization: Bearer …` header, if there is exactly one well-formed one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && token.len() <= 256).then_some(token)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)
            .ok_or(ApiError::Unauthorized("a bearer access token is required"))?;
        let hash = state.hasher.hash_token(token).to_hex();
        let row: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
            "SELECT s.id, u.id, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.is_active AND s.expires_at > now() AND u.is_active",
        )
        .bind(&hash)
        .fetch_optional(&state.db)
        .await?;
        let (session_id, user_id, is_admin) = row.ok_or(ApiError::Unauthorized(
            "the access token is invalid or expired",
        ))?;
        Ok(Auth {
            user_id,
            session_id,
            is_admin,
            client: client_of(parts),
        })
    }
}
