#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;
use wrapx_benches::mock_llm::Format;

use crate::providers::testkit::{laid_out, splits, Rng};

fn c(delta: Value, finish: Value) -> String {
    let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

fn tool_stream() -> String {
    [
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"reasoning_content": "think"}), Value::Null),
        c(json!({"content": "Hé"}), Value::Null),
        c(json!({"content": "llo 🌍"}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
            "function": {"name": "now", "arguments": "{}"}}]}), Value::Null),
        c(json!({}), json!("tool_calls")),
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n".into(),
        "data: [DONE]\n\n".into(),
    ]
    .concat()
}

/// The (event name, data JSON) pairs of an Anthropic SSE output.
fn events(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

fn run(input: &[u8], mode: Option<u64>) -> (Vec<u8>, ChatToAnthropicStream) {
    let mut t = ChatToAnthropicStream::new("r1", "pinned");
    let mut out = BytesMut::new();
    for piece in splits(input, mode) {
        t.push(piece, &mut out);
    }
    t.finish(&mut out);
    (out.to_vec(), t)
}

fn ev(name: &str, v: Value) -> (String, Value) {
    (name.to_owned(), v)
}

#[test]
fn tool_stream_snapshot() {
    let (out, t) = run(tool_stream().as_bytes(), None);
    let want = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_r1",
            "type": "message", "role": "assistant", "model": "pinned", "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "think"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "Hé"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "llo 🌍"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 3,
            "content_block": {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 3,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 3}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 12, "output_tokens": 9}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    assert_eq!(events(&out), want);
    assert_eq!(
        t.usage(),
        Usage {
            prompt_tokens: 12,
            completion_tokens: 9,
            reasoning_tokens: 2,
            source: UsageSource::Reported
        }
    );
    assert!(!t.saw_error());
}

#[test]
fn identical_output_for_any_split() {
    let input = tool_stream();
    let (whole, _) = run(input.as_bytes(), None);
    assert_eq!(whole, run(input.as_bytes(), Some(0)).0);
    for seed in 1..500 {
        assert_eq!(whole, run(input.as_bytes(), Some(seed)).0, "seed {seed}");
    }
}

#[test]
fn no_done_but_finish_reason_ends_normally_with_counted_usage() {
    let input = [
        c(json!({"content": "a"}), Value::Null),
        c(json!({"content": "b"}), json!("length")),
    ]
    .concat();
    let (out, t) = run(input.as_bytes(), None);
    let evs = events(&out);
    assert_eq!(evs[evs.len() - 2].1["delta"]["stop_reason"], "max_tokens");
    assert_eq!(evs[evs.len() - 2].1["usage"]["output_tokens"], 2);
    assert_eq!(t.usage().source, UsageSource::Counted);
    assert!(!t.saw_error());
}

#[test]
fn errors_and_cut_streams() {
    let input = [
        c(json!({"content": "a"}), Value::Null),
        "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n".into(),
    ]
    .concat();
    let (out, t) = run(input.as_bytes(), None);
    let evs = events(&out);
    assert_eq!(
        evs.last().unwrap(),
        &ev(
            "error",
            json!({"type": "error",
        "error": {"type": "api_error", "message": "boom"}})
        )
    );
    assert!(t.saw_error());

    let (out, t) = run(c(json!({"content": "a"}), Value::Null).as_bytes(), None);
    assert_eq!(
        events(&out).last().unwrap(),
        &ev(
            "error",
            json!({"type": "error",
        "error": {"type": "api_error", "message": "The provider's stream ended early."}})
        )
    );
    assert!(t.saw_error());
}

#[test]
fn garbage_never_panics_and_always_ends() {
    let mut rng = Rng::new(7);
    let alphabet: &[&[u8]] = &[
        b"data: ",
        b"\n",
        b"\r\n",
        b"{",
        b"}",
        b"\"choices\":[{",
        b"\"delta\":",
        b"\"tool_calls\":[{\"index\":3}]",
        b"\"content\":\"x\"",
        b"\"finish_reason\":\"stop\"",
        b"[DONE]",
        b"\xf0\x9f",
        b",",
        b"]",
        b"\"error\":{}",
        b"\"usage\":{\"prompt_tokens\":-1}",
    ];
    for _ in 0..2000 {
        let mut input = Vec::new();
        for _ in 0..rng.below(60) {
            input.extend_from_slice(alphabet[rng.below(alphabet.len())]);
        }
        let seed = rng.next();
        let (out, _) = run(&input, Some(seed));
        let tail = std::str::from_utf8(&out).unwrap();
        assert!(
            tail.contains("event: message_stop") || tail.contains("event: error"),
            "{tail}"
        );
    }
}

/// Spaced and pretty-printed JSON, multi-line `data:`, comments and CRLF read as the compact
/// stream does, however split.
#[test]
fn every_layout_translates_the_same() {
    let stream = tool_stream();
    let (want, _) = run(stream.as_bytes(), None);
    for format in [Format::Spaced, Format::Pretty, Format::Crlf] {
        let input = laid_out(&stream, format);
        for mode in [None, Some(0), Some(3), Some(77)] {
            let (out, t) = run(&input, mode);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "{format} {mode:?}"
            );
            assert!(!t.saw_error(), "{format} {mode:?}");
            assert_eq!(
                (t.usage().prompt_tokens, t.usage().completion_tokens),
                (12, 9)
            );
        }
    }
}
