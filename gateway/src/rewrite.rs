//! The request body: checked once (one JSON parse), then rewritten for the provider: the
//! compiled prompt before the client's messages, the client's own system message handled by the
//! API's policy, the pinned model, usage on streams, the API's tools, the max_tokens cap. Every
//! other field of the client stays as sent. When the client and the provider speak different
//! dialects (OpenAI Chat Completions, Anthropic Messages), the body is translated on the way.

use bytes::Bytes;
use serde_json::{Map, Value};
use wrapx_core::{
    prompt::Example,
    types::{ProviderKind, SystemMessagePolicy},
};

use crate::{
    errors::GatewayError,
    providers::{
        chat_to_messages, messages_to_chat, openai_tool_to_anthropic, thinking::apply_thinking,
        ProviderDialect, TranslateError, DEFAULT_ANTHROPIC_MAX_TOKENS,
    },
    records::ApiRecord,
};

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
    /// Whether an OpenAI client asked for the usage chunk of a stream itself (the provider is
    /// always asked).
    pub client_include_usage: bool,
}

/// Where a rewritten body goes: one routing target's provider kind and model (the API's own
/// without a routing).
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub kind: ProviderKind,
    pub dialect: ProviderDialect,
    pub model: &'a str,
}

/// Parses, checks and rewrites the client's body for `api`: the client speaks `client`'s
/// dialect, the body leaves in `to`'s, for its model.
///
/// An Anthropic client's body on an OpenAI-compatible provider is translated first, then
/// rewritten like any chat request; an OpenAI client's body for an Anthropic provider is
/// rewritten, then translated; Anthropic to Anthropic gets the same rewrite in Anthropic's form.
pub fn rewrite(
    raw: &[u8],
    client: ProviderDialect,
    to: Destination<'_>,
    api: &ApiRecord,
    prefix_messages: &[Value],
    event_data_max_bytes: usize,
) -> Result<Rewritten, GatewayError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| GatewayError::invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
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
    let client_include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));

    let (body, prompt_chars) = match (client, to.dialect) {
        (ProviderDialect::OpenAiChat, ProviderDialect::OpenAiChat) => with_thinking(
            rewrite_chat(body, stream, api, to, prefix_messages)?,
            api,
            to,
        ),
        (ProviderDialect::OpenAiChat, ProviderDialect::AnthropicMessages) => {
            let (chat, chars) = rewrite_chat(body, stream, api, to, prefix_messages)?;
            let messages = chat_to_messages(
                &Value::Object(chat),
                api.max_tokens_cap.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS),
                api.thinking.as_ref(),
            )
            .map_err(refused)?;
            (as_object(messages)?, chars)
        }
        (ProviderDialect::AnthropicMessages, ProviderDialect::OpenAiChat) => {
            let chat = messages_to_chat(&Value::Object(body)).map_err(refused)?;
            with_thinking(
                rewrite_chat(as_object(chat)?, stream, api, to, prefix_messages)?,
                api,
                to,
            )
        }
        (ProviderDialect::AnthropicMessages, ProviderDialect::AnthropicMessages) => {
            with_thinking(rewrite_messages(body, api, to)?, api, to)
        }
    };

    let body = serde_json::to_vec(&body)
        .map_err(|e| GatewayError::invalid(format!("The request body cannot be rewritten: {e}")))?;
    Ok(Rewritten {
        body: Bytes::from(body),
        stream,
        request_data,
        prompt_estimate: u32::try_from(prompt_chars / 4).unwrap_or(u32::MAX),
        client_include_usage,
    })
}

/// Turns the provider's reasoning switch on when the API has a `thinking` tool; the body is
/// already in the provider's dialect.
fn with_thinking(
    (body, chars): (Map<String, Value>, usize),
    api: &ApiRecord,
    to: Destination<'_>,
) -> (Map<String, Value>, usize) {
    let Some(thinking) = &api.thinking else {
        return (body, chars);
    };
    let mut body = Value::Object(body);
    apply_thinking(to.kind, &mut body, thinking);
    match body {
        Value::Object(body) => (body, chars),
        _ => (Map::new(), chars), // apply_thinking keeps an object an object
    }
}

/// A client's request the provider's API cannot take: a 400 in the contract's shape.
fn refused(e: TranslateError) -> GatewayError {
    e.to_error()
}

fn as_object(v: Value) -> Result<Map<String, Value>, GatewayError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(GatewayError::invalid(
            "The request body must be a JSON object.",
        )),
    }
}

/// The chat rewrite; returns the body and the prompt's size in characters.
fn rewrite_chat(
    mut body: Map<String, Value>,
    stream: bool,
    api: &ApiRecord,
    to: Destination<'_>,
    prefix_messages: &[Value],
) -> Result<(Map<String, Value>, usize), GatewayError> {
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
    check_tools(&body)?;
    if let Some(options) = body.get("stream_options") {
        if !options.is_object() && !options.is_null() {
            return Err(GatewayError::invalid("`stream_options` must be an object."));
        }
    }

    let client_messages = take_messages(&mut body)?;
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
        if matches!(role, "system" | "developer") && !client_system_allowed(api)? {
            continue;
        }
        prompt_chars += content_len(&message);
        messages.push(message);
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("model".into(), Value::String(to.model.to_owned()));

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
    Ok((body, prompt_chars))
}

/// Whether a client's own system message is kept (`Ok(false)`: dropped; refused: 400).
fn client_system_allowed(api: &ApiRecord) -> Result<bool, GatewayError> {
    match api.system_message_policy {
        SystemMessagePolicy::Keep => Ok(true),
        SystemMessagePolicy::Drop => Ok(false),
        SystemMessagePolicy::Reject => Err(GatewayError::invalid(
            "This API does not accept system messages from clients.",
        )),
    }
}

/// The Anthropic form of the chat rewrite, for an Anthropic client on an Anthropic provider:
/// the compiled prompt before the client's `system`, the examples as the first turns, the
/// pinned model, the API's tools, the max_tokens cap (and a default, Anthropic requires one).
fn rewrite_messages(
    mut body: Map<String, Value>,
    api: &ApiRecord,
    to: Destination<'_>,
) -> Result<(Map<String, Value>, usize), GatewayError> {
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(GatewayError::invalid(
                "`max_tokens` must be a positive integer.",
            ))
        }
    }
    check_tools(&body)?;
    let client_messages = take_messages(&mut body)?;

    let ours = api.prompt.system.as_deref().filter(|s| !s.is_empty());
    let client_system = match body.remove("system") {
        None | Some(Value::Null) => None,
        Some(_) if !client_system_allowed(api)? => None,
        Some(s @ (Value::String(_) | Value::Array(_))) => Some(s),
        Some(_) => {
            return Err(GatewayError::invalid(
                "`system` must be a string or an array of text blocks.",
            ))
        }
    };
    let mut prompt_chars = ours.map_or(0, str::len)
        + match &client_system {
            Some(Value::String(s)) => s.len(),
            Some(other) => other.to_string().len(),
            None => 0,
        };
    // Ours first, as on the chat path, where our system message precedes the client's.
    let system = match (ours, client_system) {
        (None, theirs) => theirs,
        (Some(ours), Some(Value::String(theirs))) => {
            Some(Value::String(format!("{ours}\n\n{theirs}")))
        }
        (Some(ours), Some(Value::Array(theirs))) => {
            let mut blocks = Vec::with_capacity(1 + theirs.len());
            blocks.push(serde_json::json!({"type": "text", "text": ours}));
            blocks.extend(theirs);
            Some(Value::Array(blocks))
        }
        (Some(ours), _) => Some(Value::String(ours.to_owned())),
    };
    if let Some(system) = system {
        body.insert("system".into(), system);
    }

    let mut messages = Vec::with_capacity(2 * api.prompt.examples.len() + client_messages.len());
    for Example { user, assistant } in &api.prompt.examples {
        prompt_chars += user.len() + assistant.len();
        messages.push(serde_json::json!({"role": "user", "content": user}));
        messages.push(serde_json::json!({"role": "assistant", "content": assistant}));
    }
    for (i, message) in client_messages.into_iter().enumerate() {
        if !matches!(
            message.get("role").and_then(Value::as_str),
            Some("user" | "assistant")
        ) {
            return Err(GatewayError::invalid(format!(
                "`messages[{i}].role` must be \"user\" or \"assistant\"."
            )));
        }
        prompt_chars += content_len(&message);
        messages.push(message);
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("model".into(), Value::String(to.model.to_owned()));

    if !api.tools.is_empty() {
        let ours = api
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| openai_tool_to_anthropic(i, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        let our_names: Vec<String> = ours
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        let mut tools = ours;
        if let Some(Value::Array(client)) = body.remove("tools") {
            tools.extend(client.into_iter().filter(|t| {
                t["name"]
                    .as_str()
                    .is_none_or(|n| !our_names.iter().any(|o| o == n))
            }));
        }
        body.insert("tools".into(), Value::Array(tools));
    }

    let cap = api.max_tokens_cap;
    let max_tokens = match (body.get("max_tokens").and_then(Value::as_u64), cap) {
        (Some(n), Some(cap)) => n.min(u64::from(cap)),
        (Some(n), None) => n,
        (None, cap) => u64::from(cap.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS)),
    };
    body.insert("max_tokens".into(), Value::from(max_tokens));
    Ok((body, prompt_chars))
}

/// The API's tools first; a client tool with the same function name is dropped (ours win).
/// `tools`, when present, must be an array (both dialects).
fn check_tools(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("tools") {
        Some(tools) if !tools.is_array() && !tools.is_null() => {
            Err(GatewayError::invalid("`tools` must be an array."))
        }
        _ => Ok(()),
    }
}

/// The client's `messages`, required and not empty in both dialects.
fn take_messages(body: &mut Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    let Some(Value::Array(messages)) = body.remove("messages") else {
        return Err(GatewayError::invalid(
            "`messages` is required and must be an array.",
        ));
    };
    if messages.is_empty() {
        return Err(GatewayError::invalid("`messages` must not be empty."));
    }
    Ok(messages)
}

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
    use wrapx_core::prompt::CompiledPrompt;

    const CHAT: ProviderDialect = ProviderDialect::OpenAiChat;

    /// The rewrite for the API's own provider kind and model, in `provider`'s dialect.
    pub(super) fn rewrite(
        raw: &[u8],
        client: ProviderDialect,
        provider: ProviderDialect,
        api: &ApiRecord,
        prefix: &[Value],
        max: usize,
    ) -> Result<Rewritten, GatewayError> {
        let to = Destination {
            kind: api.provider,
            dialect: provider,
            model: &api.model,
        };
        super::rewrite(raw, client, to, api, prefix, max)
    }
    const MESSAGES: ProviderDialect = ProviderDialect::AnthropicMessages;

    fn api(policy: SystemMessagePolicy) -> ApiRecord {
        ApiRecord {
            system_message_policy: policy,
            tools: vec![json!({"type": "function", "function": {"name": "ours"}})],
            ..crate::records::testing::api_record()
        }
    }

    fn run(body: Value, policy: SystemMessagePolicy) -> Result<Value, GatewayError> {
        let prefix = vec![json!({"role": "system", "content": "ours"})];
        let raw = serde_json::to_vec(&body).unwrap();
        rewrite(&raw, CHAT, CHAT, &api(policy), &prefix, 1 << 20)
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
            let err =
                rewrite(&raw, CHAT, CHAT, &api(SystemMessagePolicy::Keep), &[], 100).unwrap_err();
            assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(&raw));
        }
    }

    fn translated(
        body: Value,
        client: ProviderDialect,
        provider: ProviderDialect,
        policy: SystemMessagePolicy,
    ) -> Result<Value, GatewayError> {
        let mut record = api(policy);
        record.prompt = CompiledPrompt {
            system: Some("ours".into()),
            examples: vec![Example {
                user: "q".into(),
                assistant: "a".into(),
            }],
        };
        let prefix = crate::records::prefix_messages(&record.prompt);
        let raw = serde_json::to_vec(&body).unwrap();
        rewrite(&raw, client, provider, &record, &prefix, 1 << 20)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn an_openai_request_for_an_anthropic_provider_is_rewritten_then_translated() {
        let out = translated(
            json!({"model": "x", "stream": true, "max_tokens": 500, "temperature": 1.5,
                   "messages": [{"role": "system", "content": "client sys"}, {"role": "user", "content": "hi"}]}),
            CHAT,
            MESSAGES,
            SystemMessagePolicy::Keep,
        )
        .unwrap();
        assert_eq!(out["model"], "pinned-model");
        assert_eq!(out["system"], "ours\n\nclient sys");
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "hi"}])
        );
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["stream"], true);
        assert!(out.get("stream_options").is_none());
        assert_eq!(
            out["tools"],
            json!([{"name": "ours", "input_schema": {"type": "object", "properties": {}}}])
        );
        // The client's request cannot be expressed: 400, never 5xx.
        let err = translated(
            json!({"n": 3, "messages": [{"role": "user", "content": "hi"}]}),
            CHAT,
            MESSAGES,
            SystemMessagePolicy::Keep,
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn an_anthropic_request_for_an_openai_provider_is_translated_then_rewritten() {
        let body = json!({"model": "claude-x", "max_tokens": 50, "stream": true, "system": "client sys",
                          "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        let out = translated(body.clone(), MESSAGES, CHAT, SystemMessagePolicy::Keep).unwrap();
        assert_eq!(out["model"], "pinned-model");
        assert_eq!(out["max_tokens"], 50);
        assert_eq!(out["stream_options"]["include_usage"], true);
        let roles: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "system", "user"]);
        assert_eq!(out["messages"][0]["content"], "ours");
        let rejected = translated(body, MESSAGES, CHAT, SystemMessagePolicy::Reject).unwrap_err();
        assert_eq!(rejected.status(), 400);
        let no_max = translated(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            MESSAGES,
            CHAT,
            SystemMessagePolicy::Keep,
        )
        .unwrap_err();
        assert_eq!(no_max.status(), 400);
    }

    #[test]
    fn an_anthropic_request_for_an_anthropic_provider_gets_the_prompt_in_anthropic_form() {
        let out = translated(
            json!({"model": "claude-x", "max_tokens": 5000, "system": [{"type": "text", "text": "client sys"}],
                   "tools": [{"name": "ours", "input_schema": {}}, {"name": "theirs", "input_schema": {}}],
                   "messages": [{"role": "user", "content": "hi"}]}),
            MESSAGES,
            MESSAGES,
            SystemMessagePolicy::Keep,
        )
        .unwrap();
        assert_eq!(out["model"], "pinned-model");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "ours"}, {"type": "text", "text": "client sys"}])
        );
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "hi"}])
        );
        let names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ours", "theirs"]);

        let dropped = translated(
            json!({"system": "client sys", "messages": [{"role": "user", "content": "hi"}]}),
            MESSAGES,
            MESSAGES,
            SystemMessagePolicy::Drop,
        )
        .unwrap();
        assert_eq!(dropped["system"], "ours");
        assert_eq!(dropped["max_tokens"], 100);
        for bad in [
            json!({"messages": []}),
            json!({"messages": [{"role": "system", "content": "x"}]}),
            json!({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            json!({"system": 5, "messages": [{"role": "user", "content": "x"}]}),
        ] {
            let err =
                translated(bad.clone(), MESSAGES, MESSAGES, SystemMessagePolicy::Keep).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}");
        }
    }

    #[test]
    fn a_thinking_tool_turns_on_each_providers_reasoning_switch() {
        let body = json!({"model": "x", "max_tokens": 500, "temperature": 0.5,
                          "messages": [{"role": "user", "content": "hi"}]});
        let raw = serde_json::to_vec(&body).unwrap();
        let thinking = crate::providers::thinking::ThinkingConfig {
            budget_tokens: Some(2048),
            effort: None,
        };
        let run = |provider: ProviderKind, dialect: ProviderDialect| {
            let mut record = api(SystemMessagePolicy::Keep);
            record.provider = provider;
            record.max_tokens_cap = None;
            record.thinking = Some(thinking.clone());
            let out = rewrite(&raw, CHAT, dialect, &record, &[], 1 << 20).unwrap();
            serde_json::from_slice::<Value>(&out.body).unwrap()
        };
        assert_eq!(run(ProviderKind::Openai, CHAT)["reasoning_effort"], "low");
        assert_eq!(
            run(ProviderKind::Deepseek, CHAT)["model"],
            "deepseek-reasoner"
        );
        let anthropic = run(ProviderKind::Anthropic, MESSAGES);
        assert_eq!(anthropic["thinking"]["budget_tokens"], 2048);
        assert!(anthropic["max_tokens"].as_u64().unwrap() > 2048);
        assert!(
            anthropic.get("temperature").is_none(),
            "refused with thinking on"
        );
        // Without the tool, nothing is switched on.
        let mut record = api(SystemMessagePolicy::Keep);
        record.provider = ProviderKind::Openai;
        let out = rewrite(&raw, CHAT, CHAT, &record, &[], 1 << 20).unwrap();
        let plain: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(plain.get("reasoning_effort").is_none());
    }
}

/// Junk never panics and never becomes a 5xx: whatever the bytes, the answer is a rewritten
/// body or a 4xx the client can read.
#[cfg(test)]
mod junk {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use tests::rewrite;

    const DIALECTS: [(ProviderDialect, ProviderDialect); 4] = [
        (ProviderDialect::OpenAiChat, ProviderDialect::OpenAiChat),
        (
            ProviderDialect::OpenAiChat,
            ProviderDialect::AnthropicMessages,
        ),
        (
            ProviderDialect::AnthropicMessages,
            ProviderDialect::OpenAiChat,
        ),
        (
            ProviderDialect::AnthropicMessages,
            ProviderDialect::AnthropicMessages,
        ),
    ];

    fn api() -> ApiRecord {
        ApiRecord {
            tools: vec![json!({"type": "function", "function": {"name": "ours"}})],
            ..crate::records::testing::api_record()
        }
    }

    fn check(raw: &[u8]) {
        let prefix = vec![json!({"role": "system", "content": "ours"})];
        for (client, provider) in DIALECTS {
            if let Err(e) = rewrite(raw, client, provider, &api(), &prefix, 4096) {
                assert!(
                    (400..500).contains(&e.status()),
                    "{} for {raw:?}",
                    e.status()
                );
            }
        }
    }

    /// Any JSON value, a few levels deep, with the keys a request has.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,40}".prop_map(Value::from),
            prop_oneof![
                Just("user"),
                Just("system"),
                Just("assistant"),
                Just("tool"),
                Just("function")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("model".to_owned()),
                Just("messages".to_owned()),
                Just("role".to_owned()),
                Just("content".to_owned()),
                Just("stream".to_owned()),
                Just("max_tokens".to_owned()),
                Just("tools".to_owned()),
                Just("stream_options".to_owned()),
                Just("system".to_owned()),
                Just("type".to_owned()),
                Just("text".to_owned()),
                Just("n".to_owned()),
                Just("tool_choice".to_owned()),
                Just("stop".to_owned()),
                ".{0,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&raw);
        }

        #[test]
        fn arbitrary_json(value in json_value()) {
            check(&serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn a_request_with_junk_in_one_field(value in json_value(), field in prop_oneof![
            Just("messages"), Just("model"), Just("stream"), Just("max_tokens"), Just("tools"),
            Just("stream_options"), Just("system"), Just("temperature"), Just("stop"),
        ]) {
            let mut body = json!({"model": "m", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]});
            body[field] = value;
            check(&serde_json::to_vec(&body).unwrap());
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        for depth in [200, 10_000, 100_000] {
            let raw = format!(
                r#"{{"messages":[{{"role":"user","content":{}1{}}}]}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            check(raw.as_bytes());
        }
    }
}
