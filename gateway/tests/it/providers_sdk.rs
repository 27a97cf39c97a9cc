//! The official OpenAI and Anthropic Python SDKs parse what the provider translators produce:
//! first each SDK gets the translated body from an in-process mock transport (no network) and
//! reports what it understood; then both SDKs are clients of a wrapped API served by the real
//! gateway, backed by an Anthropic provider and by an OpenAI-compatible one, completion and
//! stream.
use std::process::Command;
use std::time::Duration;

use crate::common::{Env, Gateway};
use wrapx_benches::mock_llm::{Format, MockConfig};
use wrapx_core::events::{RequestOutcome, UsageSource};

use bytes::BytesMut;
use serde_json::{json, Value};
use wrapx_gateway::providers::{
    chat_response_to_messages, messages_response_to_chat, AnthropicToChatStream,
    ChatToAnthropicStream,
};

/// Runs the SDK script with the body to serve and returns what it printed as JSON.
fn sdk(script: &str, body: &[u8], content_type: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, body).unwrap();
    let out = Command::new(wrapx_testkit::python())
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .env("BODY", &path)
        .env("CONTENT_TYPE", content_type)
        .output()
        .expect("python with the SDKs (see TEAM.md: .venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const PRELUDE: &str = r#"
import json, os
try:  # The SDKs in this environment ship on httpx2; elsewhere on httpx.
    import httpx2 as httpx
except ImportError:
    import httpx
body = open(os.environ["BODY"], "rb").read()
def handler(request):
    return httpx.Response(200, content=body, headers={"content-type": os.environ["CONTENT_TYPE"]})
client = httpx.Client(transport=httpx.MockTransport(handler))
"#;

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hé\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"llo\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":17}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

const OPENAI_SCRIPT: &str = r#"
import openai
c = openai.OpenAI(api_key="k", base_url="http://mock/v1", http_client=client)
kw = dict(model="m", messages=[{"role": "user", "content": "q"}])
if os.environ["CONTENT_TYPE"] == "text/event-stream":
    text, args, name, finish, usage = "", "", None, None, None
    for ch in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if ch.usage:
            usage = ch.usage.model_dump(include={"prompt_tokens", "completion_tokens"})
        for choice in ch.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    print(json.dumps({"text": text, "name": name, "args": json.loads(args), "finish": finish, "usage": usage}))
else:
    r = c.chat.completions.create(**kw)
    m = r.choices[0].message
    tc = m.tool_calls[0]
    print(json.dumps({"text": m.content, "name": tc.function.name, "args": json.loads(tc.function.arguments),
        "finish": r.choices[0].finish_reason,
        "usage": r.usage.model_dump(include={"prompt_tokens", "completion_tokens"})}))
"#;

#[test]
fn openai_sdk_reads_translated_anthropic_answers() {
    let want = json!({"text": "Héllo", "name": "get_weather", "args": {"city": "Paris"},
        "finish": "tool_calls", "usage": {"prompt_tokens": 25, "completion_tokens": 17}});

    let mut t = AnthropicToChatStream::new("r1", "m", true);
    let mut out = BytesMut::new();
    for b in ANTHROPIC_STREAM.as_bytes().chunks(7) {
        t.push(b, &mut out);
    }
    t.finish(&mut out);
    assert_eq!(sdk(OPENAI_SCRIPT, &out, "text/event-stream"), want);

    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": "Héllo"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 25, "output_tokens": 17}});
    let (body, _) = messages_response_to_chat(answer.to_string().as_bytes(), "r1").unwrap();
    assert_eq!(sdk(OPENAI_SCRIPT, &body, "application/json"), want);
}

const ANTHROPIC_SCRIPT: &str = r#"
import anthropic
c = anthropic.Anthropic(api_key="k", base_url="http://mock", http_client=client)
kw = dict(model="m", max_tokens=100, messages=[{"role": "user", "content": "q"}])
if os.environ["CONTENT_TYPE"] == "text/event-stream":
    with c.messages.stream(**kw) as s:
        streamed = "".join(s.text_stream)
        m = s.get_final_message()
else:
    m = c.messages.create(**kw)
    streamed = None
blocks = [b.model_dump(include={"type", "text", "thinking", "name", "input"}) for b in m.content]
print(json.dumps({"streamed": streamed, "blocks": blocks, "stop": m.stop_reason,
    "usage": [m.usage.input_tokens, m.usage.output_tokens]}))
"#;

#[test]
fn anthropic_sdk_reads_translated_openai_answers() {
    let blocks = json!([
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "Héllo"},
        {"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}}]);

    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let stream = [
        chunk(json!({"role": "assistant", "reasoning_content": "hmm"}), Value::Null),
        chunk(json!({"content": "Hé"}), Value::Null),
        chunk(json!({"content": "llo"}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":25,\"completion_tokens\":17}}\n\n".into(),
        "data: [DONE]\n\n".into(),
    ]
    .concat();
    let mut t = ChatToAnthropicStream::new("r1", "m");
    let mut out = BytesMut::new();
    for b in stream.as_bytes().chunks(5) {
        t.push(b, &mut out);
    }
    t.finish(&mut out);
    assert_eq!(
        sdk(ANTHROPIC_SCRIPT, &out, "text/event-stream"),
        json!({"streamed": "Héllo", "blocks": blocks, "stop": "tool_use", "usage": [25, 17]})
    );

    let answer = json!({"id": "c", "object": "chat.completion", "model": "gpt",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Héllo", "reasoning_content": "hmm", "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 25, "completion_tokens": 17}});
    let (body, _) = chat_response_to_messages(answer.to_string().as_bytes(), "r1").unwrap();
    assert_eq!(
        sdk(ANTHROPIC_SCRIPT, &body, "application/json"),
        json!({"streamed": null, "blocks": blocks, "stop": "tool_use", "usage": [25, 17]})
    );
}

/// Both SDKs against `…/w/{endpoint_id}`: a completion and a stream each.
const LIVE_SCRIPT: &str = r#"
import json, sys, openai, anthropic
root, endpoint, key = sys.argv[1], sys.argv[2], sys.argv[3]
msgs = [{"role": "user", "content": "hi"}]
out = {}
o = openai.OpenAI(base_url=f"{root}/w/{endpoint}/v1", api_key=key, max_retries=0)
r = o.chat.completions.create(model="anything", messages=msgs)
out["openai"] = {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
    "usage": [r.usage.prompt_tokens, r.usage.completion_tokens]}
pieces, usage, finish = [], None, None
for ch in o.chat.completions.create(model="anything", messages=msgs, stream=True,
        stream_options={"include_usage": True}):
    for c in ch.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        finish = c.finish_reason or finish
    if ch.usage:
        usage = [ch.usage.prompt_tokens, ch.usage.completion_tokens]
out["openai_stream"] = {"text": "".join(pieces), "pieces": len(pieces), "finish": finish, "usage": usage}
a = anthropic.Anthropic(base_url=f"{root}/w/{endpoint}", api_key=key, max_retries=0)
m = a.messages.create(model="anything", max_tokens=100, messages=msgs)
out["anthropic"] = {"text": "".join(b.text for b in m.content if b.type == "text"),
    "stop": m.stop_reason, "usage": [m.usage.input_tokens, m.usage.output_tokens]}
with a.messages.stream(model="anything", max_tokens=100, messages=msgs) as s:
    pieces = list(s.text_stream)
    m = s.get_final_message()
out["anthropic_stream"] = {"text": "".join(pieces), "pieces": len(pieces), "stop": m.stop_reason,
    "usage": [m.usage.input_tokens, m.usage.output_tokens]}
print(json.dumps(out))
"#;

/// Runs both SDKs against a wrapped API on a provider of `kind` answering in `format` and
/// checks what they got and what was logged.
async fn both_sdks_against(kind: &str, format: Format) {
    let env = Env::new(MockConfig {
        chunks: 4,
        chunk_interval: Duration::from_millis(5),
        format_default: format,
        ..MockConfig::default()
    })
    .await;
    let provider = env.provider_of(kind, &env.mock.base_url()).await;
    let api = env.api_with(provider, "keep", None).await;
    let gw = Gateway::start(&env).await;
    let args = [gw.url(""), api.endpoint.to_string(), api.key.clone()];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(wrapx_testkit::python())
            .arg("-c")
            .arg(LIVE_SCRIPT)
            .args(args)
            .output()
            .expect("python with the SDKs (.venv)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = "tok0 tok1 tok2 tok3 ";
    assert_eq!(
        got,
        json!({
            "openai": {"text": text, "finish": "stop", "usage": [10, 4]},
            "openai_stream": {"text": text, "pieces": 4, "finish": "stop", "usage": [10, 4]},
            "anthropic": {"text": text, "stop": "end_turn", "usage": [10, 4]},
            "anthropic_stream": {"text": text, "pieces": 4, "stop": "end_turn", "usage": [10, 4]},
        }),
        "{kind}"
    );

    let paths: Vec<String> = env.mock.requests().into_iter().map(|r| r.path).collect();
    let want = if kind == "anthropic" {
        "/v1/messages"
    } else {
        "/v1/chat/completions"
    };
    assert_eq!(paths, [want; 4], "{kind}");

    let events = env.events(4, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 4, "{kind}");
    for e in &events {
        assert_eq!(e.outcome, RequestOutcome::Completed, "{kind}");
        assert_eq!(
            (
                e.usage.prompt_tokens,
                e.usage.completion_tokens,
                e.usage.source
            ),
            (10, 4, UsageSource::Reported),
            "{kind}, stream: {}",
            e.stream
        );
    }
    assert_eq!(events.iter().filter(|e| e.stream).count(), 2, "{kind}");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_use_a_wrapped_api_on_an_anthropic_provider() {
    both_sdks_against("anthropic", Format::Compact).await;
}

/// Spaced JSON (`"usage": {`), as Python servers send it: the stream still ends cleanly for the
/// SDKs (no error event after `message_stop`) and the tokens are logged.
#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_use_a_wrapped_api_on_a_spaced_anthropic_provider() {
    both_sdks_against("anthropic", Format::Spaced).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_use_a_wrapped_api_on_a_pretty_printing_openai_provider() {
    both_sdks_against("openai_compatible", Format::Pretty).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_use_a_wrapped_api_on_an_openai_provider() {
    both_sdks_against("openai_compatible", Format::Compact).await;
}
