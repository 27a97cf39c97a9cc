//! Anthropic Messages answer → OpenAI `chat.completion`.

use serde_json::{json, Value};
use wrapx_core::events::{Usage, UsageSource};

use crate::providers::{now_secs, openai_usage_json, u32_of, TranslateError};

/// Translates a whole (non-stream) Anthropic answer; returns the OpenAI body and its usage.
///
/// Text blocks join into `content`; `tool_use` blocks become `tool_calls` (arguments as a JSON
/// string); thinking blocks go to `reasoning_content`, never to `content`. Prompt tokens are
/// `input_tokens` plus both cache counts, the cache reads also shown as `cached_tokens`.
pub fn messages_response_to_chat(
    body: &[u8],
    request_id: &str,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    translate(body, request_id, now_secs())
}

pub(crate) fn translate(
    body: &[u8],
    request_id: &str,
    created: u64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| TranslateError::InvalidUpstream(e.to_string()))?;
    let blocks = v["content"]
        .as_array()
        .ok_or_else(|| TranslateError::InvalidUpstream("no content array".into()))?;

    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })),
            _ => {} // redacted_thinking and server tool blocks have no OpenAI counterpart.
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let (usage, cached) = usage_of(&v["usage"]);
    let out = json!({
        "id": format!("chatcmpl-{request_id}"),
        "object": "chat.completion",
        "created": created,
        "model": v["model"].as_str().unwrap_or(""),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": super::finish_reason(v["stop_reason"].as_str().unwrap_or("")),
        }],
        "usage": openai_usage_json(&usage, cached),
    });
    Ok((out.to_string().into_bytes(), usage))
}

/// Usage from an Anthropic `usage` object, and the cache reads among the prompt tokens.
pub(crate) fn usage_of(u: &Value) -> (Usage, u32) {
    if !u.is_object() {
        return (Usage::default(), 0);
    }
    let cached = u32_of(&u["cache_read_input_tokens"]);
    let usage = Usage {
        prompt_tokens: u32_of(&u["input_tokens"])
            .saturating_add(u32_of(&u["cache_creation_input_tokens"]))
            .saturating_add(cached),
        completion_tokens: u32_of(&u["output_tokens"]),
        reasoning_tokens: 0,
        source: UsageSource::Reported,
    };
    (usage, cached)
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
