//! Anthropic Messages request → OpenAI chat request.

use serde_json::{json, Map, Value};

use crate::providers::TranslateError;

/// Translates an Anthropic Messages body into an OpenAI Chat Completions body, to be rewritten
/// (system prompt, few-shot turns, pinned model) like any chat request afterwards.
///
/// `system` becomes the first system message; `tool_result` blocks become `role: tool`
/// messages placed before the rest of their user turn (OpenAI wants them right after the
/// assistant's tool calls); `tool_use` blocks become `tool_calls`; thinking blocks are dropped.
/// A stream asks for `stream_options.include_usage` so the usage arrives. `top_k` and
/// `thinking` have no OpenAI counterpart and are dropped (the wrapped API's thinking tool
/// decides reasoning).
pub fn messages_to_chat(req: &Value) -> Result<Value, TranslateError> {
    let obj = req
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let list = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: field required"))?;

    let mut messages = Vec::with_capacity(list.len() + 1);
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => {
            return Err(invalid(
                "system: must be a string or an array of text blocks",
            ))
        }
    }
    for (i, m) in list.iter().enumerate() {
        match m["role"].as_str() {
            Some("user") => user(&m["content"], i, &mut messages)?,
            Some("assistant") => messages.push(assistant(&m["content"], i)?),
            _ => {
                return Err(invalid(format!(
                    "messages.{i}.role: must be user or assistant"
                )))
            }
        }
    }

    let mut out = Map::new();
    if let Some(model) = obj.get("model") {
        out.insert("model".into(), model.clone());
    }
    out.insert("messages".into(), Value::Array(messages));
    match obj.get("max_tokens") {
        Some(v) if v.is_u64() => {
            out.insert("max_tokens".into(), v.clone());
        }
        _ => return Err(invalid("max_tokens: field required, a positive integer")),
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| v.is_number()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stops) = obj.get("stop_sequences").and_then(Value::as_array) {
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops.clone()));
        }
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = obj.get("metadata").and_then(|m| m["user_id"].as_str()) {
        out.insert("user".into(), json!(u));
    }
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

fn invalid(m: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(m.into())
}

fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(list) = obj.get("tools").and_then(Value::as_array) {
        let mut tools = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            if !matches!(t["type"].as_str(), None | Some("custom")) {
                return Err(TranslateError::Unsupported(format!(
                    "tools.{i}: only custom tools are supported by this provider"
                )));
            }
            let name = t["name"]
                .as_str()
                .ok_or_else(|| invalid(format!("tools.{i}.name: field required")))?;
            let mut f = json!({"name": name});
            if let Some(d) = t["description"].as_str() {
                f["description"] = json!(d);
            }
            f["parameters"] = if t["input_schema"].is_object() {
                t["input_schema"].clone()
            } else {
                json!({"type": "object", "properties": {}})
            };
            tools.push(json!({"type": "function", "function": f}));
        }
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(c) = obj.get("tool_choice").filter(|c| c.is_object()) {
        let choice = match c["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = c["name"]
                    .as_str()
                    .ok_or_else(|| invalid("tool_choice.name: field required"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => return Err(invalid("tool_choice.type: must be auto, any, tool or none")),
        };
        out.insert("tool_choice".into(), choice);
        if c["disable_parallel_tool_use"] == json!(true) && out.contains_key("tools") {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}

fn user(content: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            messages.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => {
            return Err(invalid(format!(
                "messages.{i}.content: must be a string or an array"
            )))
        }
    };
    let mut parts = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
            Some("image") => parts.push(image(&b["source"], i)?),
            Some("tool_result") => {
                let id = b["tool_use_id"].as_str().ok_or_else(|| {
                    invalid(format!("messages.{i}: tool_result.tool_use_id required"))
                })?;
                let text = match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(inner) => inner
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => String::new(),
                };
                // OpenAI has no error flag on a tool message; say it in the text.
                let text = if b["is_error"] == json!(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            other => {
                return Err(TranslateError::Unsupported(format!(
                    "messages.{i}: content block {:?} is not supported by this provider",
                    other.unwrap_or("")
                )))
            }
        }
    }
    if parts.len() == 1 && parts[0]["type"] == "text" {
        messages.push(json!({"role": "user", "content": parts[0]["text"]}));
    } else if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn image(source: &Value, i: usize) -> Result<Value, TranslateError> {
    let url = match source["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or("image/png"),
            source["data"].as_str().unwrap_or("")
        ),
        Some("url") => source["url"].as_str().unwrap_or("").to_owned(),
        _ => {
            return Err(invalid(format!(
                "messages.{i}: image.source must be base64 or url"
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn assistant(content: &Value, i: usize) -> Result<Value, TranslateError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(b) => b,
        _ => {
            return Err(invalid(format!(
                "messages.{i}.content: must be a string or an array"
            )))
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {} // thinking and redacted_thinking stay with Anthropic.
        }
    }
    let mut m = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            m["content"] = Value::Null;
        }
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}
