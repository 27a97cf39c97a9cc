//! Non-streaming answers, routes and per-request overrides.

use serde_json::{json, Value};
use wrapx_benches::mock_llm::MockConfig;

use crate::support::*;

#[tokio::test]
async fn openai_non_stream_answer_and_usage() {
    let mock = mock().await;
    let resp = post(&mock, "chat/completions", &chat(false), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
    );
    assert_eq!(mock.stats().requests, 1);
    assert_eq!(mock.stats().streams_started, 0);
}

#[tokio::test]
async fn any_path_prefix_and_config_are_honoured() {
    let mock = mock_with(MockConfig {
        chunks: 3,
        prompt_tokens: 42,
        ..MockConfig::default()
    })
    .await;
    let url = format!(
        "http://{}/openai/deployments/x/chat/completions",
        mock.addr()
    );
    let v: Value = client()
        .post(url)
        .json(&json!({"model": "we\"ird", "messages": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "we\"ird");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(v["usage"]["prompt_tokens"], 42);
    assert_eq!(v["usage"]["total_tokens"], 45);
}

#[tokio::test]
async fn chunk_header_and_max_tokens() {
    let mock = mock().await;
    let resp = post(
        &mock,
        "chat/completions",
        &chat(false),
        &[("x-mock-chunks", "8")],
    )
    .await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let mut body = chat(false);
    body["max_tokens"] = json!(2);
    let v: Value = post(&mock, "chat/completions", &body, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let mut body = messages(false);
    body["max_tokens"] = json!(1);
    let v: Value = post(&mock, "messages", &body, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 1);
}

#[tokio::test]
async fn anthropic_non_stream_answer_and_usage() {
    let mock = mock().await;
    let resp = post(&mock, "messages", &messages(false), &[]).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-3-5-sonnet");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4 "}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"], json!({"input_tokens": 10, "output_tokens": 5}));
}

#[tokio::test]
async fn models_and_unknown_routes() {
    let mock = mock().await;
    let v: Value = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock-model");
    assert_eq!(v["data"][0]["owned_by"], "mock");

    let resp = client()
        .post(format!("{}/embeddings", mock.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/embeddings"));

    let resp = client()
        .get(format!("{}/chat/completions", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
