//! OpenAI-shaped error answers (the provider's or the gateway's own) → Anthropic's error shape.

use serde_json::{json, Value};

/// `(status, Anthropic error type)`; any other 4xx is an `invalid_request_error`, any other
/// 5xx an `api_error`.
pub const ERROR_TABLE: &[(u16, &str)] = &[
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (402, "billing_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (413, "request_too_large"),
    (429, "rate_limit_error"),
    (503, "overloaded_error"),
    (504, "timeout_error"),
    (529, "overloaded_error"),
];

/// Maps an OpenAI-shaped error answer to `(status, Anthropic error body)`. The status is kept
/// (Anthropic's SDK retries 429 and 5xx as OpenAI's does); the message is kept when readable.
/// Also fit for the gateway's own refusals (`GatewayError` bodies) on `/v1/messages`.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = ERROR_TABLE.iter().find(|r| r.0 == status).map_or(
        if status < 500 {
            "invalid_request_error"
        } else {
            "api_error"
        },
        |r| r.1,
    );
    let message = v["error"]["message"].as_str().map_or_else(
        || format!("The provider answered with status {status}."),
        str::to_owned,
    );
    let out = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, out.to_string().into_bytes())
}
