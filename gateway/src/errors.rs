//! The one table of the gateway's own errors: code, type and status, rendered in OpenAI's
//! shape `{"error":{"message","type","code"}}`. Every refusal the gateway writes comes from here.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

/// What went wrong, from the client's point of view. The doc comment of each variant is the
/// default message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.
    MissingKey,
    /// The API key is malformed.
    MalformedKey,
    /// Incorrect API key provided.
    UnknownKey,
    /// This API key has been revoked.
    RevokedKey,
    /// This API key has expired.
    ExpiredKey,
    /// This API is not active.
    InactiveApi,
    /// The account that owns this API is disabled.
    AccountDisabled,
    /// Unknown endpoint.
    UnknownEndpoint,
    /// Unknown path.
    UnknownPath,
    /// The request is not valid.
    InvalidRequest,
    /// The request body is larger than this gateway accepts.
    BodyTooLarge,
    /// The request body did not arrive in time.
    BodyTimeout,
    /// Rate limit reached for requests.
    RateLimited,
    /// The upstream provider failed to answer.
    UpstreamError,
    /// The upstream provider is overloaded; retry later.
    ProviderOverloaded,
    /// The upstream provider did not answer in time.
    UpstreamTimeout,
    /// The service is temporarily unavailable.
    Unavailable,
    /// Internal error.
    Internal,
}

impl ErrorKind {
    /// `(status, type, code)`: the table the tests pin.
    pub const fn parts(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::MissingKey => (401, "invalid_request_error", "missing_api_key"),
            Self::MalformedKey => (401, "invalid_request_error", "invalid_api_key"),
            Self::UnknownKey => (401, "invalid_request_error", "invalid_api_key"),
            Self::RevokedKey => (401, "invalid_request_error", "revoked_api_key"),
            Self::ExpiredKey => (401, "invalid_request_error", "expired_api_key"),
            Self::InactiveApi => (403, "permission_error", "api_inactive"),
            Self::AccountDisabled => (403, "permission_error", "account_disabled"),
            Self::UnknownEndpoint => (404, "invalid_request_error", "unknown_endpoint"),
            Self::UnknownPath => (404, "invalid_request_error", "unknown_url"),
            Self::InvalidRequest => (400, "invalid_request_error", "invalid_request"),
            Self::BodyTooLarge => (413, "invalid_request_error", "request_too_large"),
            Self::BodyTimeout => (408, "invalid_request_error", "request_timeout"),
            Self::RateLimited => (429, "requests", "rate_limit_exceeded"),
            Self::UpstreamError => (502, "upstream_error", "bad_gateway"),
            Self::ProviderOverloaded => (502, "upstream_error", "provider_overloaded"),
            Self::UpstreamTimeout => (504, "upstream_error", "gateway_timeout"),
            Self::Unavailable => (503, "server_error", "service_unavailable"),
            Self::Internal => (500, "server_error", "internal_error"),
        }
    }

    pub const fn status(self) -> u16 {
        self.parts().0
    }

    fn default_message(self) -> &'static str {
        match self {
            Self::MissingKey => "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
            Self::MalformedKey => "The API key is malformed.",
            Self::UnknownKey => "Incorrect API key provided.",
            Self::RevokedKey => "This API key has been revoked.",
            Self::ExpiredKey => "This API key has expired.",
            Self::InactiveApi => "This API is not active.",
            Self::AccountDisabled => "The account that owns this API is disabled.",
            Self::UnknownEndpoint => "Unknown endpoint.",
            Self::UnknownPath => "Unknown path.",
            Self::InvalidRequest => "The request is not valid.",
            Self::BodyTooLarge => "The request body is larger than this gateway accepts.",
            Self::BodyTimeout => "The request body did not arrive in time.",
            Self::RateLimited => "Rate limit reached for requests.",
            Self::UpstreamError => "The upstream provider failed to answer.",
            Self::ProviderOverloaded => "The upstream provider is overloaded; retry later.",
            Self::UpstreamTimeout => "The upstream provider did not answer in time.",
            Self::Unavailable => "The service is temporarily unavailable.",
            Self::Internal => "Internal error.",
        }
    }
}

/// A refusal with its message. 5xx messages stay opaque; the cause goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            message: Cow::Borrowed(kind.default_message()),
        }
    }

    /// A refusal with a specific message (client errors only: it is shown to the client).
    pub fn with_message(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_message(ErrorKind::InvalidRequest, message)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
        }
        let (_, kind, code) = self.kind.parts();
        let body = Outer {
            error: Inner {
                message: &self.message,
                kind,
                code,
            },
        };
        // Serialising three strings cannot fail; the fallback keeps the shape regardless.
        serde_json::to_vec(&body).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(br#"{"error":{"message":"Internal error.","type":"server_error","code":"internal_error"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bodies_have_openai_shape() {
        let all = [
            ErrorKind::MissingKey,
            ErrorKind::MalformedKey,
            ErrorKind::UnknownKey,
            ErrorKind::RevokedKey,
            ErrorKind::ExpiredKey,
            ErrorKind::InactiveApi,
            ErrorKind::AccountDisabled,
            ErrorKind::UnknownEndpoint,
            ErrorKind::UnknownPath,
            ErrorKind::InvalidRequest,
            ErrorKind::BodyTooLarge,
            ErrorKind::BodyTimeout,
            ErrorKind::RateLimited,
            ErrorKind::UpstreamError,
            ErrorKind::ProviderOverloaded,
            ErrorKind::UpstreamTimeout,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ];
        for kind in all {
            let e = GatewayError::new(kind);
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            let (status, t, code) = kind.parts();
            assert_eq!(v["error"]["type"], t);
            assert_eq!(v["error"]["code"], code);
            assert!(v["error"]["message"].as_str().unwrap().len() > 3);
            assert!((400..600).contains(&status));
        }
        let e = GatewayError::invalid("`messages` must be a \"list\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "`messages` must be a \"list\"");
        assert_eq!(e.status(), 400);
    }
}
