//! Anthropic error answers → the gateway's error table, and so OpenAI's shape and status.
//!
//! 4xx keep their status (the contract passes a provider's 4xx on); every provider 5xx,
//! `overloaded_error` (Anthropic's 529) included, is the contract's 502 upstream error, as on
//! the OpenAI path (`proxy` turns a provider 5xx into 502), and OpenAI SDKs retry 502; the code
//! still says `provider_overloaded`. Anthropic's `timeout_error` is the contract's 504.

use serde_json::Value;

use crate::{
    dialect::ProviderDialect,
    errors::{ErrorKind, GatewayError},
};

/// Maps an Anthropic error answer to `(status, OpenAI error body)`.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = anthropic_error(status, &v);
    (e.status(), e.body_in(ProviderDialect::OpenAiChat).to_vec())
}

/// An Anthropic error (`{"type":"error","error":{"type","message"}}`, an answer's body or a
/// stream's event) as the table's error. Its type decides when it names one of Anthropic's;
/// otherwise the status does (4xx kept, 529 overloaded, 504 timeout, other 5xx → 502).
pub fn anthropic_error(status: u16, v: &Value) -> GatewayError {
    let err = &v["error"];
    let message = err["message"].as_str().map_or_else(
        || format!("The provider answered with status {status}."),
        str::to_owned,
    );
    if let Some(kind) = err["type"].as_str().and_then(ErrorKind::of_anthropic_type) {
        return GatewayError::with_message(kind, message);
    }
    let kind = match status {
        529 => ErrorKind::ProviderOverloaded,
        504 => ErrorKind::UpstreamTimeout,
        500..=599 => ErrorKind::UpstreamError,
        s => ErrorKind::of_provider_status(s),
    };
    let e = GatewayError::with_message(kind, message);
    if status < 500 && kind.status() != status {
        e.with_status(status)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;

    fn check(status: u16, body: &str) -> (u16, Value) {
        let (s, b) = anthropic_error_to_openai(status, body.as_bytes());
        (s, serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn by_type() {
        let cases = [
            (
                400,
                "invalid_request_error",
                400,
                "invalid_request_error",
                "invalid_request",
            ),
            (
                401,
                "authentication_error",
                401,
                "invalid_request_error",
                "invalid_api_key",
            ),
            (
                403,
                "permission_error",
                403,
                "permission_error",
                "permission_denied",
            ),
            (
                404,
                "not_found_error",
                404,
                "invalid_request_error",
                "not_found",
            ),
            (
                413,
                "request_too_large",
                413,
                "invalid_request_error",
                "request_too_large",
            ),
            (
                429,
                "rate_limit_error",
                429,
                "requests",
                "rate_limit_exceeded",
            ),
            (500, "api_error", 502, "upstream_error", "bad_gateway"),
            (
                529,
                "overloaded_error",
                502,
                "upstream_error",
                "provider_overloaded",
            ),
        ];
        for (status, kind, want_status, want_type, want_code) in cases {
            let body =
                format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"m {kind}"}}}}"#);
            assert_eq!(
                check(status, &body),
                (
                    want_status,
                    json!({"error": {"message": format!("m {kind}"),
                    "type": want_type, "code": want_code}})
                ),
                "{kind}"
            );
        }
    }

    #[test]
    fn by_status_when_the_body_says_nothing() {
        let cases = [
            (429, "not json", 429, "requests", "rate_limit_exceeded"),
            (529, "", 502, "upstream_error", "provider_overloaded"),
            (503, "", 502, "upstream_error", "bad_gateway"),
            (500, "{}", 502, "upstream_error", "bad_gateway"),
            (418, "{}", 418, "invalid_request_error", "invalid_request"),
            (599, "{}", 502, "upstream_error", "bad_gateway"),
        ];
        for (status, body, want_status, want_type, want_code) in cases {
            assert_eq!(
                check(status, body),
                (
                    want_status,
                    json!({"error": {"message": format!("The provider answered with status {status}."),
                    "type": want_type, "code": want_code}})
                ),
                "{status}"
            );
        }
    }
}
