//! Every behaviour, asked for by header and by model name, and their precedence.

use std::time::Duration;

use serde_json::{json, Value};
use wrapx_benches::mock_llm::{Behavior, MockConfig, MockHandle};

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Via {
    Header,
    Model,
}

const VIAS: [Via; 2] = [Via::Header, Via::Model];

/// A request asking for `word` by header or by model name.
async fn ask(
    mock: &MockHandle,
    via: Via,
    route: &str,
    word: &str,
    stream: bool,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut body = if route == "messages" {
        messages(stream)
    } else {
        chat(stream)
    };
    let mut req = client().post(format!("{}/{route}", mock.base_url()));
    match via {
        Via::Header => req = req.header("x-mock-behavior", word),
        Via::Model => body["model"] = json!(format!("mock-{word}")),
    }
    req.json(&body).send().await
}

#[tokio::test]
async fn hang_reads_the_body_and_never_answers() {
    for via in VIAS {
        let mock = mock().await;
        let answer = tokio::time::timeout(
            Duration::from_millis(300),
            ask(&mock, via, "chat/completions", "hang", false),
        )
        .await;
        assert!(answer.is_err(), "{via:?}: answered {answer:?}");
        let recorded = mock.requests();
        assert_eq!(recorded.len(), 1, "{via:?}");
        assert_eq!(recorded[0].json().unwrap()["messages"][0]["content"], "hi");
        // Shutdown ends the hanging request rather than waiting for it.
        tokio::time::timeout(Duration::from_secs(2), mock.shutdown())
            .await
            .expect("shutdown with a hanging request");
    }
}

#[tokio::test]
async fn status_answers_with_provider_shaped_errors() {
    for via in VIAS {
        let mock = mock().await;
        let resp = ask(&mock, via, "chat/completions", "status-500", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 500, "{via:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"].is_string());

        let resp = ask(&mock, via, "chat/completions", "status-429", true)
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");

        let resp = ask(&mock, via, "messages", "status-529", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 529);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert!(v["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn stall_after_sends_n_chunks_then_nothing() {
    for (via, route) in [
        (Via::Header, "chat/completions"),
        (Via::Model, "chat/completions"),
        (Via::Header, "messages"),
        (Via::Model, "messages"),
    ] {
        let mock = mock_with(MockConfig {
            chunk_interval: Duration::from_millis(10),
            ..MockConfig::default()
        })
        .await;
        let resp = ask(&mock, via, route, "stall-after-2", true).await.unwrap();
        let mut events = Events::new(resp);
        let mut content = 0;
        while content < 2 {
            let (_, e) = events.next().await.unwrap().expect("two chunks first");
            if is_content(&e) {
                content += 1;
            }
        }
        let more = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
        assert!(more.is_err(), "{via:?} {route}: got {more:?}");
        let stats = mock.stats();
        assert_eq!((stats.active_streams, stats.streams_completed), (1, 0));
        // Giving up on a stalled stream is a cancellation.
        drop(events);
        eventually("the stalled stream to be cancelled", || {
            mock.stats().streams_cancelled == 1
        })
        .await;
    }
}

#[tokio::test]
async fn malformed_sends_garbage_then_closes() {
    for via in VIAS {
        let mock = mock().await;
        let resp = ask(&mock, via, "chat/completions", "malformed", true)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["connection"], "close");
        let body = resp.bytes().await.unwrap();
        assert!(!body.is_empty());
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("[DONE]"));
        let mut data_lines = 0;
        for line in text.lines() {
            if let Some(payload) = line.strip_prefix("data:") {
                data_lines += 1;
                assert!(
                    serde_json::from_str::<Value>(payload.trim()).is_err(),
                    "{line}"
                );
            } else {
                assert!(
                    !line.starts_with("event:") && !line.starts_with("id:"),
                    "{line}"
                );
            }
        }
        assert!(data_lines > 0);
    }
}

#[tokio::test]
async fn reset_after_cuts_the_connection() {
    for via in VIAS {
        let mock = mock_with(MockConfig {
            chunk_interval: Duration::from_millis(10),
            ..MockConfig::default()
        })
        .await;
        let resp = ask(&mock, via, "chat/completions", "reset-after-1", true)
            .await
            .unwrap();
        let mut events = Events::new(resp);
        let (_, first) = events.next().await.unwrap().expect("one chunk first");
        assert!(is_openai_content(&first));
        let next = events.next().await;
        assert!(
            next.is_err(),
            "{via:?}: expected a body error, got {next:?}"
        );
        eventually("the reset stream to close", || {
            mock.stats().active_streams == 0
        })
        .await;
        let stats = mock.stats();
        assert_eq!((stats.streams_completed, stats.streams_cancelled), (0, 0));

        // A non-streaming answer is cut halfway.
        let resp = ask(&mock, via, "chat/completions", "reset-after-0", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.is_err(), "{via:?}");
    }
}

#[tokio::test]
async fn error_in_200() {
    for via in VIAS {
        let mock = mock().await;
        let resp = ask(&mock, via, "chat/completions", "error-in-200", true)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v.get("choices").is_none());

        let resp = ask(&mock, via, "messages", "error-in-200", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
    }
}

#[tokio::test]
async fn behaviour_precedence() {
    let mock = mock_with(MockConfig {
        mode_default: Behavior::Status(503),
        ..MockConfig::default()
    })
    .await;
    let status = |model: &'static str, header: Option<&'static str>| {
        let mock = &mock;
        async move {
            let mut body = chat(false);
            body["model"] = json!(model);
            let headers: Vec<(&str, &str)> =
                header.map(|h| ("x-mock-behavior", h)).into_iter().collect();
            post(mock, "chat/completions", &body, &headers)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("gpt-4o", None).await, 503, "config default");
    mock.set_behavior(Behavior::Status(502));
    assert_eq!(status("gpt-4o", None).await, 502, "handle beats config");
    assert_eq!(
        status("mock-status-501", None).await,
        501,
        "model beats handle"
    );
    assert_eq!(
        status("mock-model", None).await,
        502,
        "mock-model is not a behaviour"
    );
    assert_eq!(
        status("mock-status-501", Some("status-500")).await,
        500,
        "header beats model"
    );
    assert_eq!(status("mock-status-501", Some("normal")).await, 200);
    mock.set_behavior(Behavior::Normal);
    assert_eq!(status("gpt-4o", None).await, 200);

    // A mistyped header is refused rather than ignored.
    let resp = post(
        &mock,
        "chat/completions",
        &chat(false),
        &[("x-mock-behavior", "stall-after-many")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stall-after-many"));
}

#[tokio::test]
async fn invalid_json_is_a_400() {
    let mock = mock().await;
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}
