//! OpenAI chat request → Anthropic Messages request.

use serde_json::{json, Map, Value};
use wrapx_core::types::ProviderKind;

use crate::providers::thinking::{apply_thinking, ThinkingConfig};
use crate::providers::TranslateError;

/// Translates an OpenAI Chat Completions body (already rewritten: system prompt, few-shot
/// turns, pinned model) into an Anthropic Messages body.
///
/// System and developer messages, wherever they are, join (blank-line separated) into
/// `system`; consecutive turns of one role merge, since Anthropic wants user and assistant to
/// alternate; `role: tool` messages become `tool_result` blocks of a user turn. `max_tokens` is
/// `max_completion_tokens`, else `max_tokens`, else `default_max_tokens`. With `thinking`, the
/// Anthropic thinking switch is applied ([`apply_thinking`]).
pub fn chat_to_messages(
    chat: &Value,
    default_max_tokens: u32,
    thinking: Option<&ThinkingConfig>,
) -> Result<Value, TranslateError> {
    let obj = chat
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` is required and must be an array"))?;

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let text = text_of(content, i)?;
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(content, i)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, i)?),
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("messages[{i}].tool_call_id is required")))?;
                let block = json!({"type": "tool_result", "tool_use_id": id,
                    "content": text_of(content, i)?});
                push_turn(&mut turns, "user", vec![block]);
            }
            other => {
                return Err(TranslateError::Unsupported(format!(
                    "messages[{i}].role {other:?} is not supported by this provider"
                )))
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "at least one user or assistant message is required",
        ));
    }

    let mut out = Map::new();
    if let Some(model) = obj.get("model") {
        out.insert("model".into(), model.clone());
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(turn_json).collect()),
    );
    let max_tokens = obj
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| obj.get("max_tokens").filter(|v| !v.is_null()));
    let max_tokens = match max_tokens {
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("`max_tokens` must be a positive integer"))?,
        None => u64::from(default_max_tokens),
    };
    out.insert("max_tokens".into(), json!(max_tokens));
    params(obj, &mut out)?;
    tools(obj, &mut out)?;

    let mut body = Value::Object(out);
    if let Some(t) = thinking {
        apply_thinking(ProviderKind::Anthropic, &mut body, t);
    }
    Ok(body)
}

fn invalid(m: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(m.into())
}

fn params(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = obj.get("n").and_then(Value::as_u64) {
        if n > 1 {
            return Err(TranslateError::Unsupported(
                "`n` greater than 1 is not supported by this provider".into(),
            ));
        }
    }
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = obj.get("top_p").and_then(Value::as_f64) {
        out.insert("top_p".into(), json!(p));
    }
    let stops: Vec<Value> = match obj.get("stop") {
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) => a.iter().filter(|s| s.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    // Anthropic refuses stop sequences made of whitespace only.
    let stops: Vec<Value> = stops
        .into_iter()
        .filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty()))
        .collect();
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stops));
    }
    if let Some(s) = obj.get("stream").and_then(Value::as_bool) {
        out.insert("stream".into(), json!(s));
    }
    let user = obj
        .get("user")
        .or_else(|| obj.get("metadata").and_then(|m| m.get("user")))
        .and_then(Value::as_str);
    if let Some(u) = user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(())
}

fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let Some(list) = obj.get("tools").and_then(Value::as_array) else {
        return Ok(());
    };
    if list.is_empty() {
        return Ok(());
    }
    let tools = list
        .iter()
        .enumerate()
        .map(|(i, t)| openai_tool_to_anthropic(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    out.insert("tools".into(), Value::Array(tools));

    let mut choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(c) => {
            let name = c["function"]["name"]
                .as_str()
                .ok_or_else(|| invalid("tool_choice.function.name is required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}

/// Adds blocks to the last turn when it has the same role, else starts a turn.
/// One OpenAI `tools` entry (at index `i`) as an Anthropic tool; only function tools exist
/// on both sides.
pub fn openai_tool_to_anthropic(i: usize, t: &Value) -> Result<Value, TranslateError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(TranslateError::Unsupported(format!(
            "tools[{i}]: only function tools are supported by this provider"
        )));
    }
    let f = &t["function"];
    let name = f["name"]
        .as_str()
        .ok_or_else(|| invalid(format!("tools[{i}].function.name is required")))?;
    let mut tool = json!({"name": name});
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        tool["description"] = json!(d);
    }
    tool["input_schema"] = match f.get("parameters") {
        Some(p) if p.is_object() => p.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    Ok(tool)
}

fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, b)) if *r == role => b.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// A turn of one text block is sent as a plain string, the rest as blocks.
fn turn_json((role, mut blocks): (&'static str, Vec<Value>)) -> Value {
    if blocks.len() == 1 && blocks[0]["type"] == "text" {
        let text = blocks[0]["text"].take();
        return json!({"role": role, "content": text});
    }
    json!({"role": role, "content": blocks})
}

/// The text of a content that must be text (string or text parts).
fn text_of(content: &Value, i: usize) -> Result<String, TranslateError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(TranslateError::Unsupported(format!(
                            "messages[{i}]: only text parts are allowed here"
                        )))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

fn user_blocks(content: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => {
                        let t = p["text"].as_str().ok_or_else(|| {
                            invalid(format!("messages[{i}]: a text part needs text"))
                        })?;
                        if !t.is_empty() {
                            blocks.push(json!({"type": "text", "text": t}));
                        }
                    }
                    Some("image_url") => blocks.push(image_block(&p["image_url"], i)?),
                    other => {
                        return Err(TranslateError::Unsupported(format!(
                            "messages[{i}]: content part {:?} is not supported by this provider",
                            other.unwrap_or("")
                        )))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(invalid(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

/// `image_url.url`: a `data:<type>;base64,<data>` URL becomes a base64 source, http(s) a URL one.
fn image_block(image: &Value, i: usize) -> Result<Value, TranslateError> {
    let url = image["url"]
        .as_str()
        .ok_or_else(|| invalid(format!("messages[{i}]: image_url.url is required")))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| invalid(format!("messages[{i}]: a data: image URL must be base64")))?;
        return Ok(json!({"type": "image", "source":
            {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid(format!(
        "messages[{i}]: an image URL must be https:// or data:"
    )))
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    let text = text_of(m.get("content").unwrap_or(&Value::Null), i)?;
    // Anthropic refuses empty text blocks; an assistant turn of tool calls only has none.
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let id = c["id"]
                .as_str()
                .ok_or_else(|| invalid(format!("messages[{i}]: a tool call needs an id")))?;
            let name = c["function"]["name"]
                .as_str()
                .ok_or_else(|| invalid(format!("messages[{i}]: a tool call needs a name")))?;
            let args = c["function"]["arguments"].as_str().unwrap_or("");
            let input: Value = if args.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(args).map_err(|_| {
                    invalid(format!(
                        "messages[{i}]: tool call arguments must be a JSON object"
                    ))
                })?
            };
            if !input.is_object() {
                return Err(invalid(format!(
                    "messages[{i}]: tool call arguments must be a JSON object"
                )));
            }
            blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    Ok(blocks)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
