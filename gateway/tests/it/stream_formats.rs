//! Provider answers in every valid layout the mock can send (spaced JSON, pretty-printed JSON
//! over multi-line `data:`, CRLF with comments), through the real binary, in both dialects and
//! across them, streamed and whole: the event logs the real tokens and the stream ends
//! cleanly; a cut stream ends with one error event; the usage chunk reaches only a client that
//! asked for it.

use std::time::Duration;

use crate::common::{request_id, Api, Env, Gateway};
use serde_json::{json, Value};
use uuid::Uuid;
use wrapx_benches::mock_llm::MockConfig;
use wrapx_core::events::{RequestEvent, RequestOutcome, UsageSource};

const LAYOUTS: [&str; 3] = ["spaced", "pretty", "crlf"];

/// What the mock reports for every answer: its configured prompt tokens and one completion
/// token per content chunk.
const PROMPT_TOKENS: u32 = 10;
const CHUNKS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

/// An API on an OpenAI-compatible provider and one on an Anthropic provider, both the mock.
async fn setup() -> (Env, Gateway, [(Dialect, Api); 2]) {
    let env = Env::new(MockConfig {
        chunks: CHUNKS,
        chunk_interval: Duration::from_millis(2),
        prompt_tokens: PROMPT_TOKENS,
        ..MockConfig::default()
    })
    .await;
    let openai = env.api().await;
    let anthropic_provider = env.provider_of("anthropic", &env.mock.base_url()).await;
    let anthropic = env.api_with(anthropic_provider, "keep", None).await;
    let gw = Gateway::start(&env).await;
    (
        env,
        gw,
        [(Dialect::OpenAi, openai), (Dialect::Anthropic, anthropic)],
    )
}

/// One request in the client's dialect; the mock answers in `layout`, with `behavior` if any.
async fn ask(
    gw: &Gateway,
    api: &Api,
    client: Dialect,
    stream: bool,
    layout: &str,
    behavior: Option<&str>,
    include_usage: Option<bool>,
) -> (Uuid, String) {
    let messages = json!([{"role": "user", "content": "Hello there"}]);
    let mut body = match client {
        Dialect::OpenAi => json!({"model": "m", "stream": stream, "messages": messages}),
        Dialect::Anthropic => {
            json!({"model": "m", "max_tokens": 100, "stream": stream, "messages": messages})
        }
    };
    if let Some(include) = include_usage {
        body["stream_options"] = json!({"include_usage": include});
    }
    let mut req = reqwest::Client::new().post(match client {
        Dialect::OpenAi => gw.chat_url(api),
        Dialect::Anthropic => gw.messages_url(api),
    });
    req = match client {
        Dialect::OpenAi => req.bearer_auth(&api.key),
        Dialect::Anthropic => req
            .header("x-api-key", &api.key)
            .header("anthropic-version", "2023-06-01"),
    };
    req = req.header("x-mock-format", layout);
    if let Some(b) = behavior {
        req = req.header("x-mock-behavior", b);
    }
    let mut resp = req.json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{client:?} {layout} stream={stream}");
    let id = request_id(&resp);
    // A cut stream may end without the body's last chunk: what came is the answer.
    let mut text = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        text.extend_from_slice(&chunk);
    }
    (id, String::from_utf8(text).unwrap())
}

/// The events of an SSE text as the spec reads them: `(event name, data)` with multi-line
/// data joined, comments skipped, any line ending.
fn sse(text: &str) -> Vec<(String, String)> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut name, mut data, mut has_data) = (String::new(), Vec::new(), false);
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = value.to_owned(),
                "data" => {
                    data.push(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data {
            out.push((name, data.join("\n")));
        }
    }
    out
}

/// The JSON of every event's data (`[DONE]` as a string).
fn data_json(text: &str) -> Vec<Value> {
    sse(text)
        .into_iter()
        .map(|(_, d)| serde_json::from_str(&d).unwrap_or(Value::String(d)))
        .collect()
}

/// How many error events the client got, in its dialect.
fn error_events(client: Dialect, text: &str) -> usize {
    match client {
        Dialect::OpenAi => data_json(text)
            .iter()
            .filter(|v| v["error"].is_object())
            .count(),
        Dialect::Anthropic => sse(text).iter().filter(|(n, _)| n == "error").count(),
    }
}

/// The stream ended with its last event: `[DONE]`, or `message_stop`.
fn ended_cleanly(client: Dialect, text: &str) -> bool {
    let events = sse(text);
    match client {
        Dialect::OpenAi => events.last().is_some_and(|(_, d)| d == "[DONE]"),
        Dialect::Anthropic => events.last().is_some_and(|(n, _)| n == "message_stop"),
    }
}

/// The events of `ids`, in that order.
async fn events_of(env: &Env, ids: &[Uuid]) -> Vec<RequestEvent> {
    let mut events = env.events(ids.len(), Duration::from_secs(20)).await;
    assert_eq!(events.len(), ids.len());
    let position = |e: &RequestEvent| ids.iter().position(|id| *id == e.request_id).unwrap();
    events.sort_by_key(position);
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn every_layout_logs_its_real_tokens_and_ends_cleanly() {
    let (env, gw, apis) = setup().await;
    let mut asked = Vec::new();
    for layout in LAYOUTS {
        for (provider, api) in &apis {
            for client in [Dialect::OpenAi, Dialect::Anthropic] {
                for stream in [true, false] {
                    let case = format!(
                        "{layout} {client:?} client, {provider:?} provider, stream={stream}"
                    );
                    let (id, text) = ask(&gw, api, client, stream, layout, None, None).await;
                    if stream {
                        assert_eq!(error_events(client, &text), 0, "{case}: {text}");
                        assert!(ended_cleanly(client, &text), "{case}: {text}");
                    } else {
                        let answer: Value = serde_json::from_str(&text).unwrap();
                        assert!(answer["error"].is_null(), "{case}: {text}");
                    }
                    asked.push((id, case));
                }
            }
        }
    }
    let ids: Vec<Uuid> = asked.iter().map(|(id, _)| *id).collect();
    for (event, (_, case)) in events_of(&env, &ids).await.iter().zip(&asked) {
        assert_eq!(event.outcome, RequestOutcome::Completed, "{case}");
        assert_eq!(
            (
                event.usage.prompt_tokens,
                event.usage.completion_tokens,
                event.usage.source
            ),
            (PROMPT_TOKENS, CHUNKS as u32, UsageSource::Reported),
            "{case}"
        );
    }
}

/// A provider that ends its spaced stream early, cleanly (`end-after-2`) or by dropping the
/// connection (`reset-after-2`): the client never sees a clean end, a clean early end gets
/// exactly one error event, and the two content chunks that passed are logged.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_spaced_stream_ends_with_one_error_event_and_logs_what_passed() {
    let (env, gw, apis) = setup().await;
    let mut asked = Vec::new();
    for behavior in ["end-after-2", "reset-after-2"] {
        for (provider, api) in &apis {
            for client in [Dialect::OpenAi, Dialect::Anthropic] {
                let case = format!("{behavior}: {client:?} client, {provider:?} provider");
                let (id, text) = ask(&gw, api, client, true, "spaced", Some(behavior), None).await;
                if behavior == "end-after-2" {
                    assert_eq!(error_events(client, &text), 1, "{case}: {text}");
                } else {
                    // A dropped connection is dropped on the client too: no event can follow.
                    assert!(!ended_cleanly(client, &text), "{case}: {text}");
                }
                asked.push((id, case));
            }
        }
    }
    let ids: Vec<Uuid> = asked.iter().map(|(id, _)| *id).collect();
    for (event, (_, case)) in events_of(&env, &ids).await.iter().zip(&asked) {
        assert_eq!(event.outcome, RequestOutcome::UpstreamError, "{case}");
        assert_eq!(event.usage.completion_tokens, 2, "{case}");
        assert_ne!(event.usage.source, UsageSource::None, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_usage_chunk_reaches_only_a_client_that_asked_for_it() {
    let (env, gw, apis) = setup().await;
    let mut asked = Vec::new();
    for layout in ["compact", "spaced", "pretty", "crlf"] {
        for (provider, api) in &apis {
            for include_usage in [None, Some(false), Some(true)] {
                let case =
                    format!("{layout}, {provider:?} provider, include_usage {include_usage:?}");
                let (id, text) =
                    ask(&gw, api, Dialect::OpenAi, true, layout, None, include_usage).await;
                let chunks = data_json(&text);
                let usage_chunks: Vec<&Value> = chunks
                    .iter()
                    .filter(|c| c["choices"] == json!([]))
                    .collect();
                if include_usage == Some(true) {
                    assert_eq!(usage_chunks.len(), 1, "{case}: {text}");
                    assert_eq!(
                        usage_chunks[0]["usage"]["completion_tokens"], CHUNKS,
                        "{case}"
                    );
                } else {
                    assert!(usage_chunks.is_empty(), "{case}: {text}");
                    // Every chunk a client indexes has a `choices[0]`.
                    for c in chunks.iter().filter(|c| c.is_object()) {
                        assert!(c["choices"][0].is_object(), "{case}: {c}");
                    }
                }
                assert!(ended_cleanly(Dialect::OpenAi, &text), "{case}: {text}");
                asked.push((id, case));
            }
        }
    }
    let ids: Vec<Uuid> = asked.iter().map(|(id, _)| *id).collect();
    for (event, (_, case)) in events_of(&env, &ids).await.iter().zip(&asked) {
        assert_eq!(
            (
                event.usage.prompt_tokens,
                event.usage.completion_tokens,
                event.usage.source
            ),
            (PROMPT_TOKENS, CHUNKS as u32, UsageSource::Reported),
            "{case}"
        );
    }
}
