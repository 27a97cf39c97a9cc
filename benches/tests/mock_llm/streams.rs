//! Streams: pacing, the usage chunk, Anthropic's event order, and clients that hang up.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wrapx_benches::mock_llm::MockConfig;

use crate::support::*;

#[tokio::test]
async fn openai_stream_chunks_arrive_spread_out() {
    let mock = mock_with(MockConfig {
        chunk_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let resp = post(&mock, "chat/completions", &chat(true), &[]).await;
    let events = Events::new(resp).all().await;

    let content: Vec<&(Instant, String)> = events
        .iter()
        .filter(|(_, e)| is_openai_content(e))
        .collect();
    assert_eq!(content.len(), 5, "{events:#?}");
    let spread = content[4].0 - content[0].0;
    assert!(spread >= Duration::from_millis(150), "spread {spread:?}");
    // Every gap is real: no two chunks arrive together.
    for pair in content.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(20),
            "{pair:?}"
        );
    }
    assert!(content[0].0 - started < Duration::from_millis(150));

    let texts: Vec<String> = content
        .iter()
        .map(|(_, e)| {
            data(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "]);
    let first = data(&content[0].1).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "gpt-4o");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");

    // After the content: the finish chunk, then [DONE], and no usage chunk.
    let tail: Vec<&String> = events.iter().skip(5).map(|(_, e)| e).collect();
    assert_eq!(tail.len(), 2, "{tail:#?}");
    let finish = data(tail[0]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish.get("usage").is_none());
    assert_eq!(tail[1], "data: [DONE]");

    eventually("the stream to be counted complete", || {
        let s = mock.stats();
        s.streams_started == 1 && s.streams_completed == 1 && s.active_streams == 0
    })
    .await;
    assert_eq!(mock.stats().streams_cancelled, 0);
}

#[tokio::test]
async fn include_usage_chunk_only_when_asked() {
    let mock = mock_with(MockConfig {
        chunk_interval: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = Events::new(post(&mock, "chat/completions", &body, &[]).await)
        .all()
        .await;
    let usage: Vec<Value> = events
        .iter()
        .filter_map(|(_, e)| data(e))
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "{events:#?}");
    assert_eq!(usage[0]["choices"], json!([]));
    assert_eq!(
        usage[0]["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
    );
    // The usage chunk is the last before [DONE].
    let n = events.len();
    assert_eq!(events[n - 1].1, "data: [DONE]");
    assert_eq!(data(&events[n - 2].1).unwrap()["choices"], json!([]));

    for explicit_false in [false, true] {
        let mut body = chat(true);
        if explicit_false {
            body["stream_options"] = json!({"include_usage": false});
        }
        let events = Events::new(post(&mock, "chat/completions", &body, &[]).await)
            .all()
            .await;
        assert_eq!(events.len(), 7);
        assert!(events
            .iter()
            .filter_map(|(_, e)| data(e))
            .all(|v| v.get("usage").is_none()));
    }
}

#[tokio::test]
async fn anthropic_stream_event_order_and_usage() {
    let mock = mock_with(MockConfig {
        chunks: 3,
        chunk_interval: Duration::from_millis(30),
        ..MockConfig::default()
    })
    .await;
    let events = Events::new(post(&mock, "messages", &messages(true), &[]).await)
        .all()
        .await;
    let names: Vec<&str> = events.iter().map(|(_, e)| name(e)).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (_, e) in &events {
        assert_eq!(data(e).unwrap()["type"], name(e), "{e}");
    }
    let start = data(&events[0].1).unwrap();
    assert_eq!(start["message"]["model"], "claude-3-5-sonnet");
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(
        start["message"]["usage"],
        json!({"input_tokens": 10, "output_tokens": 1})
    );
    let delta = data(&events[3].1).unwrap();
    assert_eq!(
        delta["delta"],
        json!({"type": "text_delta", "text": "tok0 "})
    );
    let message_delta = data(&events[7].1).unwrap();
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 3);
    assert!(events[5].0 - events[3].0 >= Duration::from_millis(50));
    eventually("completion", || mock.stats().streams_completed == 1).await;
}

#[tokio::test]
async fn interval_header_overrides_pacing() {
    let mock = mock_with(MockConfig {
        chunk_interval: Duration::from_secs(10),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let resp = post(
        &mock,
        "chat/completions",
        &chat(true),
        &[("x-mock-interval-ms", "1"), ("x-mock-chunks", "3")],
    )
    .await;
    let events = Events::new(resp).all().await;
    assert_eq!(events.iter().filter(|(_, e)| is_content(e)).count(), 3);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn client_dropping_a_stream_counts_as_cancelled() {
    let mock = mock_with(MockConfig {
        chunks: 50,
        chunk_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let mut events = Events::new(post(&mock, "chat/completions", &chat(true), &[]).await);
    for _ in 0..2 {
        let (_, e) = events.next().await.unwrap().unwrap();
        assert!(is_openai_content(&e));
    }
    assert_eq!(mock.stats().active_streams, 1);
    drop(events);
    eventually("the dropped stream to be counted", || {
        let s = mock.stats();
        s.streams_cancelled == 1 && s.active_streams == 0
    })
    .await;
    assert_eq!(mock.stats().streams_completed, 0);
}
