//! OpenAI-shaped error answers (the provider's or the gateway's own) → Anthropic's error shape,
//! through the gateway's error table.

use serde_json::Value;

use crate::{
    dialect::ProviderDialect,
    errors::{ErrorKind, GatewayError},
};

/// Maps an OpenAI-shaped error answer to `(status, Anthropic error body)`. The status is kept
/// (Anthropic's SDK retries 429 and 5xx as OpenAI's does); the message is kept when readable.
/// Also fit for the gateway's own refusals (`GatewayError` bodies) on `/v1/messages`.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = openai_error(status, &v);
    (
        status,
        e.body_in(ProviderDialect::AnthropicMessages).to_vec(),
    )
}

/// An OpenAI error (`{"error":{"message",…}}`, an answer's body or a stream's chunk) as the
/// table's error: the kind the status stands for, the provider's message.
pub fn openai_error(status: u16, v: &Value) -> GatewayError {
    let message = v["error"]["message"].as_str().map_or_else(
        || format!("The provider answered with status {status}."),
        str::to_owned,
    );
    GatewayError::with_message(ErrorKind::of_provider_status(status), message)
}
