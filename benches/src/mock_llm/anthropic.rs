//! Anthropic Messages bodies: the message, the `event:` stream and errors.

use std::fmt::Write as _;

use bytes::Bytes;

use super::answer::{piece, Answer, StreamScript};

/// The non-streaming `message` body. `text` is the joined content of every chunk.
pub(crate) fn message(a: &Answer, text: &str) -> Bytes {
    let mut s = String::with_capacity(320 + text.len() + a.model_json.len());
    let _ = write!(
        s,
        r#"{{"id":"msg_mock{seq}","type":"message","role":"assistant","model":{model},"content":[{{"type":"text","text":"{text}"}}],"stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":{p},"output_tokens":{c}}}}}"#,
        seq = a.seq,
        model = a.model_json,
        stop = stop_reason(a),
        p = a.prompt_tokens,
        c = a.completion_tokens,
    );
    Bytes::from(s)
}

/// The streaming events in Anthropic's order: message_start, content_block_start, ping, one
/// content_block_delta per chunk, content_block_stop, message_delta, message_stop.
pub(crate) fn stream(a: &Answer) -> StreamScript {
    let mut start = String::with_capacity(320 + a.model_json.len());
    let _ = write!(
        start,
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock{seq}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{p},\"output_tokens\":1}}}}}}\n\n",
        seq = a.seq,
        model = a.model_json,
        p = a.prompt_tokens,
    );
    let head = vec![
        Bytes::from(start),
        Bytes::from_static(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
        Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
    ];

    let content = (0..a.completion_tokens)
        .map(|i| {
            let mut s = String::with_capacity(128);
            s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
            piece(&mut s, i);
            s.push_str("\"}}\n\n");
            Bytes::from(s)
        })
        .collect();

    let mut delta = String::with_capacity(200);
    let _ = write!(
        delta,
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{c}}}}}\n\n",
        stop = stop_reason(a),
        c = a.completion_tokens,
    );
    let tail = vec![
        Bytes::from_static(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        ),
        Bytes::from(delta),
        Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
    ];

    StreamScript {
        head,
        content,
        tail,
    }
}

/// Anthropic's error object for a status.
pub(crate) fn error(status: u16, message: &str) -> Bytes {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
    Bytes::from(format!(
        r#"{{"type":"error","error":{{"type":"{kind}","message":{message}}}}}"#
    ))
}

fn stop_reason(a: &Answer) -> &'static str {
    if a.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_event_is_named_and_valid_json() {
        let a = Answer::new(1, "claude", 10, 2, Some(2), false);
        let s = stream(&a);
        let names: Vec<String> = s
            .head
            .iter()
            .chain(&s.content)
            .chain(&s.tail)
            .map(|frame| {
                let text = std::str::from_utf8(frame).unwrap();
                let (event, data) = text.trim_end().split_once('\n').unwrap();
                let data: serde_json::Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                let name = event.strip_prefix("event: ").unwrap();
                assert_eq!(data["type"], name);
                name.to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let m: serde_json::Value = serde_json::from_slice(&message(&a, "tok0 tok1 ")).unwrap();
        assert_eq!(m["usage"]["output_tokens"], 2);
        assert_eq!(m["stop_reason"], "end_turn");
        let e: serde_json::Value = serde_json::from_slice(&error(529, "busy")).unwrap();
        assert_eq!(e["error"]["type"], "overloaded_error");
    }
}
