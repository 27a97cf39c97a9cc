//! The request body: checked once (one JSON parse), then rewritten for the provider: the
//! compiled prompt before the client's messages, the client's own system message handled by the
//! API's policy, the pinned model, usage on streams, the API's tools, the max_tokens cap. Every
//! other field of the client stays as sent.

use bytes::Bytes;
use serde_json::{Map, Value};
use wrapx_core::types::SystemMessagePolicy;

use crate::{errors::GatewayError, records::ApiRecord};

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// The rewritten request and what the event needs to know about it.
#[derive(Debug)]
pub struct Rewritten {
    pub body: Bytes,
    pub stream: bool,
    /// The client's request for the event: the parsed body when it fits the size limit, or a
    /// note of its size.
    pub request_data: Value,
    /// A rough prompt size (characters / 4), used only when a stream is cut short before the
    /// provider reports usage.
    pub prompt_estimate: u32,
}

/// Parses, checks and rewrites the client's body for `api`.
pub fn rewrite(
    raw: &[u8],
    api: &ApiRecord,
    prefix_messages: &[Value],
    event_data_max_bytes: usize,
) -> Result<Rewritten, GatewayError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| GatewayError::invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(GatewayError::invalid(
            "The request body must be a JSON object.",
        ));
    };
    let request_data = if raw.len() <= event_data_max_bytes {
        Value::Object(body.clone())
    } else {
        serde_json::json!({"truncated": true, "bytes": raw.len()})
    };

    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(GatewayError::invalid("`stream` must be a boolean.")),
    };
    if let Some(model) = body.get("model") {
        if !model.is_string() {
            return Err(GatewayError::invalid("`model` must be a string."));
        }
    }
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
            Some(_) => {
                return Err(GatewayError::invalid(format!(
                    "`{field}` must be a positive integer."
                )))
            }
        }
    }
    if let Some(tools) = body.get("tools") {
        if !tools.is_array() && !tools.is_null() {
            return Err(GatewayError::invalid("`tools` must be an array."));
        }
    }
    if let Some(options) = body.get("stream_options") {
        if !options.is_object() && !options.is_null() {
            return Err(GatewayError::invalid("`stream_options` must be an object."));
        }
    }

    let Some(Value::Array(client_messages)) = body.remove("messages") else {
        return Err(GatewayError::invalid(
            "`messages` is required and must be an array.",
        ));
    };
    if client_messages.is_empty() {
        return Err(GatewayError::invalid("`messages` must not be empty."));
    }
    let mut messages = Vec::with_capacity(prefix_messages.len() + client_messages.len());
    messages.extend(prefix_messages.iter().cloned());
    let mut prompt_chars = prefix_messages.iter().map(content_len).sum::<usize>();
    for (i, message) in client_messages.into_iter().enumerate() {
        let Some(role) = message.get("role").and_then(Value::as_str) else {
            return Err(GatewayError::invalid(format!(
                "`messages[{i}].role` is required and must be a string."
            )));
        };
        if !ROLES.contains(&role) {
            return Err(GatewayError::invalid(format!(
                "`messages[{i}].role` {role:?} is not a known role."
            )));
        }
        if !message.is_object() {
            return Err(GatewayError::invalid(format!(
                "`messages[{i}]` must be an object."
            )));
        }
        if matches!(role, "system" | "developer") {
            match api.system_message_policy {
                SystemMessagePolicy::Keep => {}
                SystemMessagePolicy::Drop => continue,
                SystemMessagePolicy::Reject => {
                    return Err(GatewayError::invalid(
                        "This API does not accept system messages from clients.",
                    ))
                }
            }
        }
        prompt_chars += content_len(&message);
        messages.push(message);
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("model".into(), Value::String(api.model.clone()));

    if stream {
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }

    if !api.tools.is_empty() {
        attach_tools(&mut body, &api.tools);
    }

    if let Some(cap) = api.max_tokens_cap {
        let mut capped = false;
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(v) = body.get_mut(field) {
                if let Some(n) = v.as_u64() {
                    capped = true;
                    if n > u64::from(cap) {
                        *v = Value::from(cap);
                    }
                }
            }
        }
        if !capped {
            body.insert("max_tokens".into(), Value::from(cap));
        }
    }

    let body = serde_json::to_vec(&body)
        .map_err(|e| GatewayError::invalid(format!("The request body cannot be rewritten: {e}")))?;
    Ok(Rewritten {
        body: Bytes::from(body),
        stream,
        request_data,
        prompt_estimate: u32::try_from(prompt_chars / 4).unwrap_or(u32::MAX),
    })
}

/// The API's tools first; a client tool with the same function name is dropped (ours win).
fn attach_tools(body: &mut Map<String, Value>, ours: &[Value]) {
    let name = |t: &Value| {
        t.pointer("/function/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let our_names: Vec<String> = ours.iter().filter_map(name).collect();
    let mut tools: Vec<Value> = ours.to_vec();
    if let Some(Value::Array(client)) = body.remove("tools") {
        tools.extend(
            client
                .into_iter()
                .filter(|t| name(t).is_none_or(|n| !our_names.contains(&n))),
        );
    }
    body.insert("tools".into(), Value::Array(tools));
}

fn content_len(message: &Value) -> usize {
    match message.get("content") {
        Some(Value::String(s)) => s.len(),
        Some(other @ Value::Array(_)) => other.to_string().len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;
    use wrapx_core::{prompt::CompiledPrompt, types::ProviderKind};

    fn api(policy: SystemMessagePolicy) -> ApiRecord {
        ApiRecord {
            id: uuid::Uuid::nil(),
            user_id: uuid::Uuid::nil(),
            endpoint_id: "ep_x".into(),
            active: true,
            owner_active: true,
            model: "pinned-model".into(),
            system_message_policy: policy,
            max_tokens_cap: Some(100),
            provider_id: uuid::Uuid::nil(),
            provider: ProviderKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key_ciphertext: String::new(),
            prompt: CompiledPrompt::default(),
            tools: vec![json!({"type": "function", "function": {"name": "ours"}})],
            rate_limit: None,
            config_version: None,
        }
    }

    fn run(body: Value, policy: SystemMessagePolicy) -> Result<Value, GatewayError> {
        let prefix = vec![json!({"role": "system", "content": "ours"})];
        let raw = serde_json::to_vec(&body).unwrap();
        rewrite(&raw, &api(policy), &prefix, 1 << 20)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn rewrites_and_keeps_the_client_fields() {
        let out = run(
            json!({"model": "gpt-x", "stream": true, "temperature": 0.3, "max_tokens": 500,
                   "stream_options": {"other": 1},
                   "tools": [{"type": "function", "function": {"name": "ours"}}, {"type": "function", "function": {"name": "theirs"}}],
                   "messages": [{"role": "system", "content": "client sys"}, {"role": "user", "content": "hi"}]}),
            SystemMessagePolicy::Keep,
        )
        .unwrap();
        assert_eq!(out["model"], "pinned-model");
        assert_eq!(out["temperature"], 0.3);
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(
            out["stream_options"],
            json!({"other": 1, "include_usage": true})
        );
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "ours"}, {"role": "system", "content": "client sys"}, {"role": "user", "content": "hi"}])
        );
        let names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ours", "theirs"]);
    }

    #[test]
    fn system_message_policies() {
        let body = json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]});
        let dropped = run(body.clone(), SystemMessagePolicy::Drop).unwrap();
        assert_eq!(dropped["messages"].as_array().unwrap().len(), 2);
        assert_eq!(dropped["max_tokens"], 100);
        assert!(dropped.get("stream_options").is_none());
        assert_eq!(
            run(body, SystemMessagePolicy::Reject).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn bad_bodies_are_400() {
        let nested = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"[]".to_vec(),
            br#"{"messages": "hi"}"#.to_vec(),
            br#"{"messages": []}"#.to_vec(),
            br#"{}"#.to_vec(),
            br#"{"messages": [{"content": "x"}]}"#.to_vec(),
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
            br#"{"messages": [{"role": "user"}], "stream": "yes"}"#.to_vec(),
            br#"{"messages": [{"role": "user"}], "max_tokens": -1}"#.to_vec(),
            br#"{"messages": [{"role": "user"}], "model": 5}"#.to_vec(),
            format!(r#"{{"messages": {nested}}}"#).into_bytes(),
            vec![0xff, 0xfe],
        ];
        for raw in cases {
            let err = rewrite(&raw, &api(SystemMessagePolicy::Keep), &[], 100).unwrap_err();
            assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(&raw));
        }
    }
}
