//! Every format (spaced, pretty, crlf) in both dialects, streamed and whole, chosen by header,
//! model name, handle and configuration, and laid over the cut and malformed behaviours.

use std::time::Duration;

use serde_json::{json, Value};
use wrapx_benches::mock_llm::{Format, MockConfig, MockHandle};

use crate::support::*;

const ROUTES: [&str; 2] = ["chat/completions", "messages"];
const FORMATS: [Format; 3] = [Format::Spaced, Format::Pretty, Format::Crlf];

fn body(route: &str, stream: bool) -> Value {
    if route == "messages" {
        messages(stream)
    } else {
        chat(stream)
    }
}

async fn raw(mock: &MockHandle, route: &str, body: &Value, headers: &[(&str, &str)]) -> String {
    let resp = post(mock, route, body, headers).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The events of an SSE text as the spec reads them: `(event name, data JSON)`, multi-line
/// data joined, comments skipped, any line ending. Data that is not JSON is a string.
fn sse(text: &str) -> Vec<(String, Value)> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = String::new();
            let mut data: Option<Vec<&str>> = None;
            for line in block.lines().filter(|l| !l.starts_with(':')) {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_owned(),
                    "data" => data.get_or_insert_with(Vec::new).push(value),
                    _ => {}
                }
            }
            let data = data?.join("\n");
            let json = serde_json::from_str(&data).unwrap_or(Value::String(data));
            Some((name, json))
        })
        .collect()
}

/// The same answer with ids and timestamps left out.
fn stable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
        if let Some(m) = o.get_mut("message").and_then(Value::as_object_mut) {
            m.remove("id");
        }
    }
    v
}

/// What each format promises about the bytes.
fn assert_laid_out(format: Format, text: &str, stream: bool) {
    match format {
        Format::Spaced => {
            assert!(text.contains("\"usage\": {"), "{text}");
            assert!(!text.contains("\":{"), "{text}");
        }
        Format::Pretty => {
            if stream {
                assert!(text.contains("data: {\ndata:   \""), "{text}");
                assert!(text.contains(": pretty\n"), "{text}");
            } else {
                assert!(text.contains("\n  \"usage\": {\n"), "{text}");
            }
        }
        Format::Crlf => {
            assert!(text.contains("\r\n"), "{text}");
            let bare = text
                .match_indices('\n')
                .any(|(i, _)| i == 0 || &text[i - 1..i] != "\r");
            assert!(!bare, "a bare LF: {text:?}");
            if stream {
                assert!(text.contains(": ping\r\n"), "{text}");
            }
        }
        Format::Compact => {}
    }
}

#[tokio::test]
async fn every_format_carries_the_compact_answer() {
    let mock = mock_with(MockConfig {
        chunk_interval: Duration::ZERO,
        ..MockConfig::default()
    })
    .await;
    for route in ROUTES {
        for stream in [false, true] {
            let mut body = body(route, stream);
            body["stream_options"] = json!({"include_usage": true});
            let compact = raw(&mock, route, &body, &[]).await;
            for format in FORMATS {
                let word = format.to_string();
                let text = raw(&mock, route, &body, &[("x-mock-format", &word)]).await;
                assert_laid_out(format, &text, stream);
                if stream {
                    let want: Vec<(String, Value)> = sse(&compact)
                        .into_iter()
                        .map(|(n, v)| (n, stable(v)))
                        .collect();
                    let got: Vec<(String, Value)> = sse(&text)
                        .into_iter()
                        .map(|(n, v)| (n, stable(v)))
                        .collect();
                    assert_eq!(got, want, "{route} {format}");
                    assert!(got.len() > 5);
                } else {
                    let want = stable(serde_json::from_str(&compact).unwrap());
                    let got = stable(serde_json::from_str(&text).unwrap());
                    assert_eq!(got, want, "{route} {format}");
                    assert!(got["usage"].is_object());
                }
            }
        }
    }
}

#[tokio::test]
async fn the_format_comes_from_header_model_handle_or_configuration() {
    let mock = mock_with(MockConfig {
        format_default: Format::Crlf,
        ..MockConfig::default()
    })
    .await;
    let route = "chat/completions";
    let text = raw(&mock, route, &chat(false), &[]).await;
    assert_laid_out(Format::Crlf, &text, false);

    mock.set_format(Format::Pretty);
    let text = raw(&mock, route, &chat(false), &[]).await;
    assert_laid_out(Format::Pretty, &text, false);

    let mut by_model = chat(false);
    by_model["model"] = json!("mock-spaced");
    let text = raw(&mock, route, &by_model, &[]).await;
    assert_laid_out(Format::Spaced, &text, false);

    // The header beats the model name.
    let text = raw(&mock, route, &by_model, &[("x-mock-format", "crlf")]).await;
    assert_laid_out(Format::Crlf, &text, false);

    let resp = post(&mock, route, &chat(false), &[("x-mock-format", "tabs")]).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn formats_lay_over_cut_and_malformed_streams() {
    let mock = mock_with(MockConfig {
        chunk_interval: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await;
    for route in ROUTES {
        for format in FORMATS {
            for cut in ["reset-after-2", "end-after-2"] {
                assert_cut(&mock, route, format, cut).await;
            }
            let body = body(route, true);
            let word = format.to_string();
            let headers = [
                ("x-mock-format", word.as_str()),
                ("x-mock-behavior", "malformed"),
            ];
            let text = raw(&mock, route, &body, &headers).await;
            assert!(text.contains("not an event stream"), "{text}");
            if format == Format::Crlf {
                assert!(text.contains("not an event stream\r\n"), "{text:?}");
            }
        }
    }
}

/// A stream cut by `behavior`, asked for by model name (format, then behaviour): the head and
/// two content events in `format`, never the end.
async fn assert_cut(mock: &MockHandle, route: &str, format: Format, behavior: &str) {
    let mut body = body(route, true);
    body["model"] = json!(format!("mock-{format}-{behavior}"));
    let mut resp = post(mock, route, &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let mut text = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).unwrap();
    let events = sse(&text);
    let content = events
        .iter()
        .filter(|(n, v)| {
            n == "content_block_delta" || v["choices"][0]["delta"]["content"].is_string()
        })
        .count();
    assert_eq!(content, 2, "{route} {format} {behavior}: {text}");
    assert!(
        !events
            .iter()
            .any(|(n, v)| n == "message_stop" || v == "[DONE]"),
        "{route} {format} {behavior}: cut before the end"
    );
    if format == Format::Crlf {
        assert_laid_out(format, &text, true);
    }
}
