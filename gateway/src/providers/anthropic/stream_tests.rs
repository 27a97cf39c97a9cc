#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;
use wrapx_benches::mock_llm::Format;

use crate::providers::testkit::{data_lines, laid_out, splits, Rng};

/// A text answer with thinking, a tool call, a ping and a multi-byte character, as Anthropic
/// streams it.
const TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\r\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo 🌍\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7,
        "model": "claude-test", "choices": [{"index": 0, "delta": delta, "logprobs": null,
        "finish_reason": finish}]})
}

fn run(input: &[u8], mode: Option<u64>, include_usage: bool) -> (Vec<u8>, AnthropicToChatStream) {
    let mut t = AnthropicToChatStream::new_at("r1", "pinned", include_usage, 7);
    let mut out = BytesMut::new();
    for piece in splits(input, mode) {
        t.push(piece, &mut out);
    }
    t.finish(&mut out);
    (out.to_vec(), t)
}

#[test]
fn tool_stream_snapshot() {
    let (out, t) = run(TOOL_STREAM.as_bytes(), None, true);
    let want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"reasoning_content": "hmm"}), Value::Null),
        chunk(json!({"content": "Héllo 🌍"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7,
            "model": "claude-test", "choices": [], "usage": {"prompt_tokens": 30,
            "completion_tokens": 42, "total_tokens": 72,
            "prompt_tokens_details": {"cached_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 0}}}),
        json!("[DONE]"),
    ];
    assert_eq!(data_lines(&out), want);
    assert_eq!(
        t.usage(),
        Usage {
            prompt_tokens: 30,
            completion_tokens: 42,
            reasoning_tokens: 0,
            source: UsageSource::Reported
        }
    );
    assert!(!t.saw_error());
}

#[test]
fn identical_output_for_any_split() {
    let (whole, _) = run(TOOL_STREAM.as_bytes(), None, true);
    let (bytewise, _) = run(TOOL_STREAM.as_bytes(), Some(0), true);
    assert_eq!(whole, bytewise);
    for seed in 1..500 {
        let (random, t) = run(TOOL_STREAM.as_bytes(), Some(seed), true);
        assert_eq!(whole, random, "seed {seed}");
        assert_eq!(t.usage().completion_tokens, 42);
    }
}

/// Spaced and pretty-printed JSON, multi-line `data:`, comments and CRLF read as the compact
/// stream does, however split.
#[test]
fn every_layout_translates_the_same() {
    let (want, _) = run(TOOL_STREAM.as_bytes(), None, true);
    for format in [Format::Spaced, Format::Pretty, Format::Crlf] {
        let input = laid_out(TOOL_STREAM, format);
        for mode in [None, Some(0), Some(3), Some(77)] {
            let (out, t) = run(&input, mode, true);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "{format} {mode:?}"
            );
            assert!(!t.saw_error(), "{format} {mode:?}");
            assert_eq!(t.usage().prompt_tokens, 30);
        }
    }
}

#[test]
fn output_comes_as_soon_as_each_event_is_complete() {
    let mut t = AnthropicToChatStream::new_at("r1", "m", false, 7);
    let mut out = BytesMut::new();
    let first_end = TOOL_STREAM.find("\n\n").unwrap() + 2;
    t.push(&TOOL_STREAM.as_bytes()[..first_end - 1], &mut out);
    assert!(out.is_empty(), "nothing before the blank line");
    t.push(b"\n", &mut out);
    assert_eq!(data_lines(&out).len(), 1, "the role chunk right away");
}

#[test]
fn without_include_usage_no_usage_chunk() {
    let (out, _) = run(TOOL_STREAM.as_bytes(), None, false);
    let lines = data_lines(&out);
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(lines[7], json!("[DONE]"));
}

#[test]
fn error_event() {
    let input = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (out, t) = run(input.as_bytes(), None, true);
    let lines = data_lines(&out);
    assert_eq!(
        lines[1..],
        [
            json!({"error": {"message": "Overloaded", "type": "upstream_error", "code": "provider_overloaded"}}),
            json!("[DONE]")
        ]
    );
    assert!(t.saw_error());
    assert_eq!(t.usage().prompt_tokens, 3);
}

#[test]
fn cut_short_stream_is_an_error_with_counted_usage() {
    let cut = TOOL_STREAM
        .find("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}")
        .unwrap();
    let (out, t) = run(&TOOL_STREAM.as_bytes()[..cut], None, true);
    let lines = data_lines(&out);
    assert_eq!(
        lines[lines.len() - 2..],
        [
            json!({"error": {"message": "The provider's stream ended early.", "type": "upstream_error", "code": "bad_gateway"}}),
            json!("[DONE]")
        ]
    );
    assert!(t.saw_error());
    // message_start reported the input; the output is the pieces that passed (thinking and
    // text), not message_start's placeholder 1.
    assert_eq!(t.usage().prompt_tokens, 30);
    assert_eq!(t.usage().completion_tokens, 2);
}

#[test]
fn last_event_without_blank_line_counts() {
    let input = TOOL_STREAM.trim_end_matches('\n');
    let (out, t) = run(input.as_bytes(), None, false);
    assert_eq!(data_lines(&out).last(), Some(&json!("[DONE]")));
    assert!(!t.saw_error());
}

#[test]
fn junk_is_skipped_and_never_panics() {
    let junk = "data: not json\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\ndata: {\"type\":\"content_block_delta\",\"delta\":7}\n\n: comment\n\n";
    let (out, _) = run(junk.as_bytes(), None, false);
    // Only the role chunk (content_block_delta starts the answer) and the cut-short error.
    assert_eq!(data_lines(&out).len(), 3);

    let mut rng = Rng::new(99);
    let alphabet: &[&[u8]] = &[
        b"data: ",
        b"event: ",
        b"\n",
        b"\r\n",
        b"{",
        b"}",
        b"\"type\":",
        b"\"message_start\"",
        b"\"content_block_delta\"",
        b"\"error\"",
        b"\xff\xfe",
        b"[DONE]",
        b":",
        b",",
        b"\"delta\":{\"type\":\"text_delta\",\"text\":1}",
        b"\"index\":18446744073709551615",
    ];
    for _ in 0..2000 {
        let mut input = Vec::new();
        for _ in 0..rng.below(60) {
            input.extend_from_slice(alphabet[rng.below(alphabet.len())]);
        }
        let seed = rng.next();
        let (out, t) = run(&input, Some(seed), true);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let _ = t.usage();
    }
}

#[test]
fn never_ending_line_is_bounded() {
    let mut t = AnthropicToChatStream::new_at("r1", "m", false, 7);
    let mut out = BytesMut::new();
    let block = vec![b'a'; 64 * 1024];
    t.push(b"data: ", &mut out);
    for _ in 0..20 {
        t.push(&block, &mut out);
    }
    assert!(t.saw_error());
    let lines = data_lines(&out);
    assert_eq!(lines[0]["error"]["code"], "bad_gateway");
    assert_eq!(lines.last(), Some(&json!("[DONE]")));
    let len = out.len();
    t.push(b"\n\n", &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), len, "nothing after the end");
}
