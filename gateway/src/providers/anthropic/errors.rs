//! Anthropic error answers → OpenAI's error shape and status.

use serde_json::{json, Value};

/// `(Anthropic error type, OpenAI status, OpenAI type, OpenAI code)`: the table tests pin.
/// 4xx keep their status (the contract passes a provider's 4xx on); every provider 5xx,
/// `overloaded_error` (Anthropic's 529) included, is the contract's 502 upstream error, as on
/// the OpenAI path (`proxy` turns a provider 5xx into 502), and OpenAI SDKs retry 502; the
/// code still says `provider_overloaded`. Anthropic's `timeout_error` is the contract's 504.
pub const ERROR_TABLE: &[(&str, u16, &str, &str)] = &[
    (
        "invalid_request_error",
        400,
        "invalid_request_error",
        "invalid_request",
    ),
    (
        "authentication_error",
        401,
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        "billing_error",
        402,
        "invalid_request_error",
        "billing_error",
    ),
    (
        "permission_error",
        403,
        "permission_error",
        "permission_denied",
    ),
    ("not_found_error", 404, "invalid_request_error", "not_found"),
    (
        "request_too_large",
        413,
        "invalid_request_error",
        "request_too_large",
    ),
    ("rate_limit_error", 429, "requests", "rate_limit_exceeded"),
    ("timeout_error", 504, "upstream_error", "gateway_timeout"),
    ("api_error", 502, "upstream_error", "bad_gateway"),
    (
        "overloaded_error",
        502,
        "upstream_error",
        "provider_overloaded",
    ),
];

/// Maps an Anthropic error answer to `(status, OpenAI error body)`. The type decides when the
/// body names a known one; otherwise the status does (4xx kept, 529 overloaded, 5xx → 502).
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let given = err["type"].as_str().unwrap_or("");
    let row = ERROR_TABLE
        .iter()
        .find(|r| r.0 == given)
        .or_else(|| type_for_status(status).and_then(|t| ERROR_TABLE.iter().find(|r| r.0 == t)));
    let upstream_status = status;
    let (status, kind, code) = match row {
        Some(&(_, s, t, c)) => (s, t, c),
        None if (400..500).contains(&status) => {
            (status, "invalid_request_error", "invalid_request")
        }
        None => (502, "upstream_error", "bad_gateway"),
    };
    let message = err["message"].as_str().map_or_else(
        || format!("The provider answered with status {upstream_status}."),
        str::to_owned,
    );
    let out = json!({"error": {"message": message, "type": kind, "code": code}});
    (status, out.to_string().into_bytes())
}

/// The Anthropic error type a bare status stands for, when the body names none.
fn type_for_status(status: u16) -> Option<&'static str> {
    match status {
        529 => Some("overloaded_error"),
        504 => Some("timeout_error"),
        500..=599 => Some("api_error"),
        s => ERROR_TABLE.iter().find(|r| r.1 == s).map(|r| r.0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
