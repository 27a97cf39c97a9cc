//! The admin API's one error type and the one place it becomes a response: the contract's
//! `{"error":{"code","message"}}` with a precise 4xx for anything a client sent, and an opaque
//! 500 whose cause goes to the log only.

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: invalid JSON, a bad path or query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials (missing, unknown, expired or revoked token; wrong password).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but this route is for operators only.
    #[error("this route is for operators only")]
    Forbidden,
    /// The resource does not exist or belongs to another account.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with the current state (a duplicate, a resource in use).
    #[error("{0}")]
    Conflict(String),
    /// The body is well-formed JSON but its content is not acceptable.
    #[error("{0}")]
    Validation(String),
    /// The body is over the configured limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("expected a body with content-type application/json")]
    UnsupportedMediaType,
    /// Too many failed attempts; try again after the given number of seconds.
    #[error("too many attempts, try again later")]
    TooManyRequests { retry_after_secs: u64 },
    /// A backend this request needs (the broker for a test delivery) is unavailable.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything else: logged with its cause chain, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// A human-readable explanation; never holds a secret.
    pub message: String,
}

impl ApiError {
    /// The table of status and code per variant.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

/// A contract-shaped body for a status, used by the catch-all that rewrites axum's and
/// tower's own plain answers (405, 408, 413 before the body, panics).
pub fn body_for_status(status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "expected a body with content-type application/json",
        ),
        s if s.is_client_error() => ("bad_request", "the request could not be handled"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is unavailable"),
        _ => ("internal", "internal error"),
    };
    json_error(status, code, message.to_owned())
}

fn json_error(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let mut response = json_error(status, code, self.to_string());
        if let Self::TooManyRequests { retry_after_secs } = self {
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = error {
            return Self::NotFound("resource");
        }
        if let Some(db) = error.as_database_error() {
            // SQLSTATE classes: what the client sent broke a constraint, so it is theirs to fix.
            match db.code().as_deref() {
                Some("23505") => {
                    return Self::Conflict("a resource with these values already exists".into())
                }
                Some("23503") => {
                    return Self::Conflict(
                        "the resource is in use or refers to one that is not".into(),
                    )
                }
                Some("23514") | Some("23502") => {
                    return Self::Validation(format!(
                        "a value is out of the allowed range ({})",
                        db.constraint().unwrap_or("check")
                    ))
                }
                Some("22001") | Some("22003") | Some("22007") | Some("22008") | Some("22P02")
                | Some("22023") => {
                    return Self::Validation("a value is out of the allowed range".into())
                }
                // NUL in text or in a JSON string (`\u0000`), which PostgreSQL cannot store.
                Some("22021") | Some("22P05") => {
                    return Self::Validation("text cannot contain NUL characters".into())
                }
                // Any other data exception is about the values sent too.
                Some(code) if code.starts_with("22") => {
                    return Self::Validation("a value is not valid".into())
                }
                _ => {}
            }
        }
        Self::Internal(error.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Validation(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!(
            "invalid query parameter: {}",
            rejection.body_text()
        ))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
