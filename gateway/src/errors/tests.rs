#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::*;
use crate::dialect::ProviderDialect;

/// The table, pinned: (kind, status, OpenAI type, OpenAI code, Anthropic type).
const PINNED: [(ErrorKind, u16, &str, &str, &str); 22] = [
    (
        ErrorKind::MissingKey,
        401,
        "invalid_request_error",
        "missing_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::MalformedKey,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::UnknownKey,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::RevokedKey,
        401,
        "invalid_request_error",
        "revoked_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::ExpiredKey,
        401,
        "invalid_request_error",
        "expired_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::InactiveApi,
        403,
        "permission_error",
        "api_inactive",
        "permission_error",
    ),
    (
        ErrorKind::AccountDisabled,
        403,
        "permission_error",
        "account_disabled",
        "permission_error",
    ),
    (
        ErrorKind::UnknownEndpoint,
        404,
        "invalid_request_error",
        "unknown_endpoint",
        "not_found_error",
    ),
    (
        ErrorKind::UnknownPath,
        404,
        "invalid_request_error",
        "unknown_url",
        "not_found_error",
    ),
    (
        ErrorKind::InvalidRequest,
        400,
        "invalid_request_error",
        "invalid_request",
        "invalid_request_error",
    ),
    (
        ErrorKind::BodyTooLarge,
        413,
        "invalid_request_error",
        "request_too_large",
        "request_too_large",
    ),
    (
        ErrorKind::BodyTimeout,
        408,
        "invalid_request_error",
        "request_timeout",
        "invalid_request_error",
    ),
    (
        ErrorKind::RateLimited,
        429,
        "requests",
        "rate_limit_exceeded",
        "rate_limit_error",
    ),
    (
        ErrorKind::ProviderAuthentication,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "authentication_error",
    ),
    (
        ErrorKind::ProviderBilling,
        402,
        "invalid_request_error",
        "billing_error",
        "billing_error",
    ),
    (
        ErrorKind::ProviderPermission,
        403,
        "permission_error",
        "permission_denied",
        "permission_error",
    ),
    (
        ErrorKind::ProviderNotFound,
        404,
        "invalid_request_error",
        "not_found",
        "not_found_error",
    ),
    (
        ErrorKind::UpstreamError,
        502,
        "upstream_error",
        "bad_gateway",
        "api_error",
    ),
    (
        ErrorKind::ProviderOverloaded,
        502,
        "upstream_error",
        "provider_overloaded",
        "overloaded_error",
    ),
    (
        ErrorKind::UpstreamTimeout,
        504,
        "upstream_error",
        "gateway_timeout",
        "timeout_error",
    ),
    (
        ErrorKind::Unavailable,
        503,
        "server_error",
        "service_unavailable",
        "overloaded_error",
    ),
    (
        ErrorKind::Internal,
        500,
        "server_error",
        "internal_error",
        "api_error",
    ),
];

#[test]
fn the_table_is_pinned_and_covers_every_kind() {
    assert_eq!(PINNED.map(|row| row.0), ErrorKind::ALL);
    for (kind, status, openai_type, code, anthropic_type) in PINNED {
        let e = GatewayError::new(kind);
        assert_eq!(e.status(), status, "{kind:?}");
        let message = e.message.to_string();
        assert!(message.ends_with('.'), "{kind:?}: {message}");
        let openai: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            openai,
            json!({"error": {"message": message, "type": openai_type, "code": code}}),
            "{kind:?}"
        );
        let anthropic: Value =
            serde_json::from_slice(&e.body_in(ProviderDialect::AnthropicMessages)).unwrap();
        assert_eq!(
            anthropic,
            json!({"type": "error", "error": {"type": anthropic_type, "message": message}}),
            "{kind:?}"
        );
    }
}

#[test]
fn every_anthropic_type_names_the_kind_that_renders_it() {
    for kind in ErrorKind::ALL {
        let anthropic_type = kind.parts().anthropic_type;
        let named = ErrorKind::of_anthropic_type(anthropic_type).unwrap();
        assert_eq!(named.parts().anthropic_type, anthropic_type, "{kind:?}");
    }
    assert_eq!(ErrorKind::of_anthropic_type("made_up_error"), None);
}

#[test]
fn stream_events_in_each_dialect() {
    let e = GatewayError::with_message(ErrorKind::UpstreamError, "cut \"short\"");
    assert_eq!(
        &e.stream_event(ProviderDialect::OpenAiChat)[..],
        &br#"data: {"error":{"message":"cut \"short\"","type":"upstream_error","code":"bad_gateway"}}

"#[..]
    );
    assert_eq!(
        &e.stream_event(ProviderDialect::AnthropicMessages)[..],
        &br#"event: error
data: {"type":"error","error":{"type":"api_error","message":"cut \"short\""}}

"#[..]
    );
}

#[test]
fn a_provider_status_can_replace_the_kinds() {
    let e = GatewayError::invalid("unprocessable").with_status(422);
    assert_eq!(e.status(), 422);
    assert_eq!(GatewayError::invalid("x").status(), 400);
    assert_eq!(
        ErrorKind::of_provider_status(422),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        ErrorKind::of_provider_status(529),
        ErrorKind::ProviderOverloaded
    );
    assert_eq!(ErrorKind::of_provider_status(500), ErrorKind::UpstreamError);
    assert_eq!(ErrorKind::of_provider_status(503), ErrorKind::Unavailable);
}
