//! OpenAI `chat.completion` answer → Anthropic `message`.

use serde_json::{json, Value};
use wrapx_core::events::{Usage, UsageSource};

use crate::providers::{u32_of, TranslateError};

/// Translates a whole (non-stream) OpenAI answer; returns the Anthropic body and its usage.
/// `reasoning_content` becomes a thinking block (no signature: it never goes back to
/// Anthropic); tool call arguments that are not a JSON object are kept as
/// `{"arguments": "<raw>"}`.
pub fn chat_response_to_messages(
    body: &[u8],
    request_id: &str,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| TranslateError::InvalidUpstream(e.to_string()))?;
    let choice = &v["choices"][0];
    let m = &choice["message"];
    if !m.is_object() {
        return Err(TranslateError::InvalidUpstream(
            "no choices[0].message".into(),
        ));
    }
    let mut content = Vec::new();
    if let Some(r) = m["reasoning_content"].as_str().filter(|s| !s.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = m["content"].as_str().filter(|s| !s.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(calls) = m["tool_calls"].as_array() {
        for c in calls {
            content.push(
                json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
                "input": tool_input(c["function"]["arguments"].as_str().unwrap_or(""))}),
            );
        }
    }
    let usage = usage_of(&v["usage"]);
    let out = json!({
        "id": format!("msg_{request_id}"),
        "type": "message",
        "role": "assistant",
        "model": v["model"].as_str().unwrap_or(""),
        "content": content,
        "stop_reason": super::stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    });
    Ok((out.to_string().into_bytes(), usage))
}

/// A tool call's arguments as Anthropic's `input` object.
pub(crate) fn tool_input(args: &str) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v) if v.is_object() => v,
        _ => json!({"arguments": args}),
    }
}

/// Usage from an OpenAI `usage` object (reasoning tokens where the provider says).
pub(crate) fn usage_of(u: &Value) -> Usage {
    if !u.is_object() {
        return Usage::default();
    }
    Usage {
        prompt_tokens: u32_of(&u["prompt_tokens"]),
        completion_tokens: u32_of(&u["completion_tokens"]),
        reasoning_tokens: u32_of(&u["completion_tokens_details"]["reasoning_tokens"]),
        source: UsageSource::Reported,
    }
}
