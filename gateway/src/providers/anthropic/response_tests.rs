#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;

fn check(body: Value, want_message: Value, finish: &str, usage: Value) {
    let (out, _) = translate(body.to_string().as_bytes(), "r1", 7).unwrap();
    let got: Value = serde_json::from_slice(&out).unwrap();
    let want = json!({"id": "chatcmpl-r1", "object": "chat.completion", "created": 7,
        "model": "claude-test", "choices": [{"index": 0, "message": want_message,
        "logprobs": null, "finish_reason": finish}], "usage": usage});
    assert_eq!(got, want, "\n got: {got:#}\nwant: {want:#}");
}

fn usage(p: u32, c: u32, cached: u32) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0}})
}

#[test]
fn text_answer() {
    check(
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 3}}),
        json!({"role": "assistant", "content": "Hello world"}),
        "stop",
        usage(10, 3, 0),
    );
}

#[test]
fn tool_use_thinking_and_cache() {
    check(
        json!({"model": "claude-test", "stop_reason": "tool_use", "content": [
            {"type": "thinking", "thinking": "Let me see.", "signature": "x"},
            {"type": "redacted_thinking", "data": "y"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 4,
                "cache_read_input_tokens": 6, "output_tokens": 30}}),
        json!({"role": "assistant", "content": null, "reasoning_content": "Let me see.",
            "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        "tool_calls",
        usage(20, 30, 6),
    );
}

#[test]
fn stop_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let body = json!({"model": "claude-test", "content": [], "stop_reason": stop});
        let (out, u) = translate(body.to_string().as_bytes(), "r1", 7).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], finish);
        assert_eq!(u, Usage::default(), "no usage given");
    }
}

#[test]
fn usage_is_returned() {
    let body = json!({"content": [], "usage": {"input_tokens": 1, "output_tokens": 2}});
    let (_, u) = messages_response_to_chat(body.to_string().as_bytes(), "r").unwrap();
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            reasoning_tokens: 0,
            source: UsageSource::Reported
        }
    );
}

#[test]
fn unreadable_answers() {
    for body in [&b"nope"[..], b"{}", b"{\"content\": 3}", b"\xff"] {
        let e = messages_response_to_chat(body, "r").unwrap_err();
        assert_eq!(e.status(), 502);
        assert_eq!(
            serde_json::from_slice::<Value>(&e.to_error().body()).unwrap(),
            json!({"error": {"message": "The upstream provider failed to answer.",
                "type": "upstream_error", "code": "bad_gateway"}})
        );
    }
}
