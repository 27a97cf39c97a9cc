#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;

/// One case: the OpenAI body in, the Anthropic body expected out.
fn check(chat: Value, want: Value) {
    let got = chat_to_messages(&chat, 1024, None).unwrap();
    assert_eq!(got, want, "\n got: {got:#}\nwant: {want:#}");
}

#[test]
fn system_few_shot_and_merging() {
    check(
        json!({"model": "claude-x", "messages": [
            {"role": "system", "content": "You are Wrap."},
            {"role": "user", "content": "ex q"},
            {"role": "assistant", "content": "ex a"},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
        ]}),
        json!({"model": "claude-x", "system": "You are Wrap.\n\nBe brief.", "max_tokens": 1024,
        "messages": [
            {"role": "user", "content": "ex q"},
            {"role": "assistant", "content": "ex a"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "text", "text": "there"}]},
        ]}),
    );
}

#[test]
fn parameters() {
    let cases = [
        (
            json!({"max_tokens": 50, "temperature": 1.7, "top_p": 0.5, "stop": "END",
                "stream": true, "user": "u-1", "seed": 3, "frequency_penalty": 1}),
            json!({"max_tokens": 50, "temperature": 1.0, "top_p": 0.5, "stop_sequences": ["END"],
                "stream": true, "metadata": {"user_id": "u-1"}}),
        ),
        (
            json!({"max_tokens": 50, "max_completion_tokens": 70, "temperature": -1,
                "stop": ["a", " ", "b"], "n": 1}),
            json!({"max_tokens": 70, "temperature": 0.0, "stop_sequences": ["a", "b"]}),
        ),
        (json!({"max_tokens": null}), json!({"max_tokens": 1024})),
    ];
    for (params, want) in cases {
        let mut chat = json!({"messages": [{"role": "user", "content": "q"}]});
        let mut expected = json!({"messages": [{"role": "user", "content": "q"}]});
        for (k, v) in params.as_object().unwrap() {
            chat[k] = v.clone();
        }
        for (k, v) in want.as_object().unwrap() {
            expected[k] = v.clone();
        }
        check(chat, expected);
    }
}

#[test]
fn tools_calls_and_results() {
    check(
        json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
          ],
          "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "now"}}],
          "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
          "parallel_tool_calls": false}),
        json!({"max_tokens": 1024, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                {"type": "text", "text": "thanks"}]},
          ],
          "tools": [
            {"name": "get_weather", "description": "Weather",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}}],
          "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}}),
    );
}

#[test]
fn tool_choice_table() {
    for (choice, want) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
    ] {
        let chat = json!({"messages": [{"role": "user", "content": "q"}], "tool_choice": choice,
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        let got = chat_to_messages(&chat, 10, None).unwrap();
        assert_eq!(got["tool_choice"], want);
    }
}

#[test]
fn images() {
    check(
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        ]}]}),
        json!({"max_tokens": 1024, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}]}),
    );
}

#[test]
fn with_thinking() {
    let chat = json!({"messages": [{"role": "user", "content": "q"}], "temperature": 0.3});
    let t = ThinkingConfig {
        budget_tokens: Some(2000),
        effort: None,
    };
    let got = chat_to_messages(&chat, 1024, Some(&t)).unwrap();
    assert_eq!(
        got,
        json!({"messages": [{"role": "user", "content": "q"}], "max_tokens": 3024,
            "thinking": {"type": "enabled", "budget_tokens": 2000}})
    );
}

#[test]
fn refusals() {
    let cases: &[(Value, TranslateError)] = &[
        (json!([]), invalid("the request body must be a JSON object")),
        (
            json!({}),
            invalid("`messages` is required and must be an array"),
        ),
        (
            json!({"messages": [{"role": "system", "content": "s"}]}),
            invalid("at least one user or assistant message is required"),
        ),
        (
            json!({"messages": [{"content": "x"}]}),
            invalid("messages[0].role is required"),
        ),
        (
            json!({"messages": [{"role": "function", "content": "x"}]}),
            TranslateError::Unsupported(
                "messages[0].role \"function\" is not supported by this provider".into(),
            ),
        ),
        (
            json!({"messages": [{"role": "user", "content": "q"}], "n": 2}),
            TranslateError::Unsupported(
                "`n` greater than 1 is not supported by this provider".into(),
            ),
        ),
        (
            json!({"messages": [{"role": "user", "content": "q"}], "max_tokens": 0}),
            invalid("`max_tokens` must be a positive integer"),
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            TranslateError::Unsupported(
                "messages[0]: content part \"input_audio\" is not supported by this provider"
                    .into(),
            ),
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            invalid("messages[0]: an image URL must be https:// or data:"),
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            invalid("messages[0]: tool call arguments must be a JSON object"),
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            invalid("messages[0].tool_call_id is required"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "web_search"}]}),
            TranslateError::Unsupported(
                "tools[0]: only function tools are supported by this provider".into(),
            ),
        ),
        (
            json!({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
            invalid("unknown tool_choice \"sometimes\""),
        ),
    ];
    for (chat, want) in cases {
        let got = chat_to_messages(chat, 10, None).unwrap_err();
        assert_eq!(&got, want, "{chat}");
        assert_eq!(got.status(), 400);
    }
}
