//! OpenAI Chat Completions bodies: the answer, the `chat.completion.chunk` stream and errors.

use std::fmt::Write as _;

use bytes::Bytes;

use super::answer::{piece, Answer, StreamScript};

/// The non-streaming `chat.completion` body. `text` is the joined content of every chunk.
pub(crate) fn completion(a: &Answer, text: &str) -> Bytes {
    let mut s = String::with_capacity(320 + text.len() + a.model_json.len());
    let _ = write!(
        s,
        r#"{{"id":"chatcmpl-mock{seq}","object":"chat.completion","created":{created},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
        seq = a.seq,
        created = a.created,
        model = a.model_json,
        finish = finish_reason(a),
        p = a.prompt_tokens,
        c = a.completion_tokens,
        t = u64::from(a.prompt_tokens) + a.completion_tokens as u64,
    );
    Bytes::from(s)
}

/// The streaming events: content chunks (the first also carries the assistant role), the chunk
/// with the finish reason, the usage chunk when asked for, and `[DONE]`.
pub(crate) fn stream(a: &Answer) -> StreamScript {
    let mut prefix = String::with_capacity(128 + a.model_json.len());
    let _ = write!(
        prefix,
        r#"data: {{"id":"chatcmpl-mock{seq}","object":"chat.completion.chunk","created":{created},"model":{model},"choices":["#,
        seq = a.seq,
        created = a.created,
        model = a.model_json,
    );
    // OpenAI sends `"usage":null` on every chunk once usage was asked for.
    let suffix = if a.include_usage {
        "],\"usage\":null}\n\n"
    } else {
        "]}\n\n"
    };

    let content = (0..a.completion_tokens)
        .map(|i| {
            let mut s = String::with_capacity(prefix.len() + 120);
            s.push_str(&prefix);
            s.push_str(r#"{"index":0,"delta":{"#);
            if i == 0 {
                s.push_str(r#""role":"assistant","#);
            }
            s.push_str(r#""content":""#);
            piece(&mut s, i);
            s.push_str(r#""},"logprobs":null,"finish_reason":null}"#);
            s.push_str(suffix);
            Bytes::from(s)
        })
        .collect();

    let mut tail = Vec::with_capacity(3);
    let mut last = prefix.clone();
    let _ = write!(
        last,
        r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{}"}}{suffix}"#,
        finish_reason(a)
    );
    tail.push(Bytes::from(last));
    if a.include_usage {
        let mut usage = prefix;
        let _ = write!(
            usage,
            "],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{t}}}}}\n\n",
            p = a.prompt_tokens,
            c = a.completion_tokens,
            t = u64::from(a.prompt_tokens) + a.completion_tokens as u64,
        );
        tail.push(Bytes::from(usage));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));

    StreamScript {
        head: Vec::new(),
        content,
        tail,
    }
}

/// OpenAI's error object for a status.
pub(crate) fn error(status: u16, message: &str) -> Bytes {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "null"),
        401 => ("invalid_request_error", "\"invalid_api_key\""),
        403 => ("permission_error", "null"),
        404 => ("invalid_request_error", "\"model_not_found\""),
        429 => ("requests", "\"rate_limit_exceeded\""),
        500..=599 => ("server_error", "null"),
        _ => ("invalid_request_error", "null"),
    };
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
    Bytes::from(format!(
        r#"{{"error":{{"message":{message},"type":"{kind}","param":null,"code":{code}}}}}"#
    ))
}

fn finish_reason(a: &Answer) -> &'static str {
    if a.truncated {
        "length"
    } else {
        "stop"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(include_usage: bool) -> Answer {
        Answer::new(7, "gpt-\"x\"", 10, 3, None, include_usage)
    }

    fn json(frame: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(frame).unwrap();
        let data = text.strip_prefix("data: ").unwrap().trim_end();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn completion_is_valid_json() {
        let a = answer(false);
        let v: serde_json::Value =
            serde_json::from_slice(&completion(&a, &super::super::answer::full_text(3))).unwrap();
        assert_eq!(v["model"], "gpt-\"x\"");
        assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
        assert_eq!(v["usage"]["total_tokens"], 13);
    }

    #[test]
    fn stream_frames_are_valid_json() {
        let s = stream(&answer(true));
        assert_eq!(s.content.len(), 3);
        assert_eq!(
            json(&s.content[0])["choices"][0]["delta"]["role"],
            "assistant"
        );
        assert_eq!(
            json(&s.content[2])["choices"][0]["delta"]["content"],
            "tok2 "
        );
        assert_eq!(json(&s.tail[0])["choices"][0]["finish_reason"], "stop");
        assert_eq!(json(&s.tail[1])["usage"]["completion_tokens"], 3);
        assert_eq!(s.tail[2], "data: [DONE]\n\n");
        let without = stream(&answer(false));
        assert_eq!(without.tail.len(), 2);
    }

    #[test]
    fn error_is_valid_json() {
        let v: serde_json::Value = serde_json::from_slice(&error(429, "slow \"down\"")).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
}
