#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::{json, Value};
use wrapx_core::events::{Usage, UsageSource};

use super::errors::openai_error_to_anthropic;
use super::request::messages_to_chat;
use super::response::chat_response_to_messages;
use crate::providers::TranslateError;

#[test]
fn request_translation() {
    let req = json!({
        "model": "claude-sonnet", "max_tokens": 300, "system": [{"type": "text", "text": "Sys."}],
        "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"], "stream": true,
        "metadata": {"user_id": "u-1"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "bad", "is_error": true},
                {"type": "text", "text": "and?"}]},
            {"role": "assistant", "content": "so"},
        ],
        "tools": [{"name": "f", "description": "F", "input_schema": {"type": "object"}}, {"name": "g"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    });
    let want = json!({
        "model": "claude-sonnet", "max_tokens": 300, "temperature": 0.2, "top_p": 0.9,
        "stop": ["END"], "stream": true, "stream_options": {"include_usage": true}, "user": "u-1",
        "messages": [
            {"role": "system", "content": "Sys."},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "calling", "tool_calls": [{"id": "toolu_1",
                "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: bad"},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "so"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "description": "F", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "required", "parallel_tool_calls": false,
    });
    let got = messages_to_chat(&req).unwrap();
    assert_eq!(got, want, "\n got: {got:#}\nwant: {want:#}");
}

#[test]
fn request_choices_and_refusals() {
    for (choice, want) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ] {
        let req = json!({"max_tokens": 1, "messages": [{"role": "user", "content": "q"}],
            "system": "s", "tool_choice": choice});
        let got = messages_to_chat(&req).unwrap();
        assert_eq!(got["tool_choice"], want);
        assert_eq!(
            got["messages"][0],
            json!({"role": "system", "content": "s"})
        );
    }
    let bad: &[(Value, TranslateError)] = &[
        (
            json!({"messages": [{"role": "user", "content": "q"}]}),
            TranslateError::InvalidRequest("max_tokens: field required, a positive integer".into()),
        ),
        (
            json!({"max_tokens": 1}),
            TranslateError::InvalidRequest("messages: field required".into()),
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "system", "content": "q"}]}),
            TranslateError::InvalidRequest("messages.0.role: must be user or assistant".into()),
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            TranslateError::Unsupported(
                "messages.0: content block \"document\" is not supported by this provider".into(),
            ),
        ),
        (
            json!({"max_tokens": 1, "messages": [], "tools": [{"type": "web_search_20250305", "name": "w"}]}),
            TranslateError::Unsupported(
                "tools.0: only custom tools are supported by this provider".into(),
            ),
        ),
    ];
    for (req, want) in bad {
        assert_eq!(&messages_to_chat(req).unwrap_err(), want, "{req}");
    }
}

#[test]
fn response_translation() {
    let body = json!({"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "ok", "reasoning_content": "why",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "oops"}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "completion_tokens_details": {"reasoning_tokens": 3}}});
    let (out, usage) = chat_response_to_messages(body.to_string().as_bytes(), "r1").unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        json!({"id": "msg_r1", "type": "message", "role": "assistant", "model": "gpt-x",
            "content": [
                {"type": "thinking", "thinking": "why", "signature": ""},
                {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {"arguments": "oops"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 7}})
    );
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 11,
            completion_tokens: 7,
            reasoning_tokens: 3,
            source: UsageSource::Reported
        }
    );

    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ] {
        let body = json!({"choices": [{"finish_reason": finish, "message": {"content": "x"}}]});
        let (out, _) = chat_response_to_messages(body.to_string().as_bytes(), "r").unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["stop_reason"],
            stop
        );
    }
    for bad in [&b"{}"[..], b"x", b"{\"choices\":[]}"] {
        assert_eq!(
            chat_response_to_messages(bad, "r").unwrap_err().status(),
            502
        );
    }
}

#[test]
fn error_table() {
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (422, "invalid_request_error"),
    ];
    for (status, kind) in cases {
        let (s, body) = openai_error_to_anthropic(
            status,
            br#"{"error":{"message":"m","type":"x","code":"y"}}"#,
        );
        assert_eq!(s, status);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"type": "error", "error": {"type": kind, "message": "m"}}),
            "{status}"
        );
    }
    let (_, body) = openai_error_to_anthropic(502, b"<html>");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"],
        "The provider answered with status 502."
    );
}
