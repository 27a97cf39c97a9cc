//! Anthropic Messages stream → OpenAI `chat.completion.chunk` stream, event by event.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};
use wrapx_core::events::{Usage, UsageSource};

use crate::errors::{ErrorKind, GatewayError};
use crate::providers::sse::{SseDecoder, SseEvent};
use crate::providers::ProviderDialect;
use crate::providers::{now_secs, openai_usage_json, MAX_PARTIAL_EVENT_BYTES};

/// Translates an Anthropic SSE stream into OpenAI chunks as each upstream event completes.
///
/// - `message_start`: the first chunk, `delta: {role: "assistant", content: ""}`; input tokens.
/// - `content_block_start` of `tool_use`: the tool call's header chunk (id, name, `""` args).
/// - `content_block_delta`: `text_delta` → `delta.content`; `input_json_delta` → the tool
///   call's `arguments` piece; `thinking_delta` → `delta.reasoning_content`; others skipped.
/// - `message_delta`: a chunk with `finish_reason`; output tokens.
/// - `message_stop`: the usage chunk (`choices: []`) when asked for, then `data: [DONE]`.
/// - `error`: an OpenAI error chunk `data: {"error":{…}}`, then `data: [DONE]`; `saw_error`.
/// - `ping`, unknown events and data that is not JSON are skipped.
///
/// Chunks carry `chatcmpl-{request_id}` as id and the model `message_start` names (the one
/// given to `new` until then).
///
/// An unfinished event over [`MAX_PARTIAL_EVENT_BYTES`], or an upstream that ends before
/// `message_stop`, ends the stream with an error chunk. Nothing is read after the end.
#[derive(Debug)]
pub struct AnthropicToChatStream {
    sse: SseDecoder,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Usage,
    cached: u32,
    /// Content pieces passed, the usage's fallback when the provider never reported one.
    counted: u32,
    /// For each content block index, its OpenAI tool call index, if it is a tool call.
    tool_index: Vec<(u64, u32)>,
    tool_calls: u32,
    started: bool,
    done: bool,
    error: bool,
}

impl AnthropicToChatStream {
    pub fn new(request_id: &str, model: &str, include_usage: bool) -> Self {
        Self::new_at(request_id, model, include_usage, now_secs())
    }

    /// As [`Self::new`] with a fixed `created` timestamp (for tests).
    pub fn new_at(request_id: &str, model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            sse: SseDecoder::new(MAX_PARTIAL_EVENT_BYTES),
            id: format!("chatcmpl-{request_id}"),
            model: model.to_owned(),
            created,
            include_usage,
            usage: Usage::default(),
            cached: 0,
            counted: 0,
            tool_index: Vec::new(),
            tool_calls: 0,
            started: false,
            done: false,
            error: false,
        }
    }

    /// Feeds upstream bytes (any split); appends the chunks of every event now complete.
    pub fn push(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !self.done {
            match self.sse.next_event(&mut input) {
                Ok(Some(ev)) => self.event(ev, out),
                Ok(None) => break,
                Err(_) => self.fail(
                    "The provider's stream sent an event too large to read.",
                    out,
                ),
            }
        }
    }

    /// Ends the stream: a last event without its blank line still counts; a stream cut
    /// before `message_stop` ends with an error chunk.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let Some(ev) = self.sse.finish() {
            self.event(ev, out);
        }
        if !self.done {
            self.fail("The provider's stream ended early.", out);
        }
    }

    /// The usage so far: reported by the provider, else counted from content pieces.
    pub fn usage(&self) -> Usage {
        if self.usage.source == UsageSource::Reported {
            // `message_start` reports an output of 1: a stream cut before `message_delta` has
            // only the pieces that passed to go by.
            return Usage {
                completion_tokens: self.usage.completion_tokens.max(self.counted),
                ..self.usage
            };
        }
        if self.counted > 0 {
            return Usage {
                completion_tokens: self.counted,
                source: UsageSource::Counted,
                ..self.usage
            };
        }
        self.usage
    }

    /// Whether the stream carried an error (upstream `error` event, cut short or unreadable).
    pub fn saw_error(&self) -> bool {
        self.error
    }

    fn event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        // The `type` in the data is authoritative; the `event:` line only a fallback.
        let kind = v["type"].as_str().unwrap_or(ev.event.as_str());
        match kind {
            "message_start" => {
                let m = &v["message"];
                if let Some(model) = m["model"].as_str().filter(|s| !s.is_empty()) {
                    model.clone_into(&mut self.model);
                }
                self.report_usage(&m["usage"]);
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let b = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0);
                match b["type"].as_str() {
                    Some("tool_use") => {
                        let i = self.tool_calls;
                        self.tool_calls += 1;
                        self.tool_index.push((index, i));
                        let call = json!([{"index": i, "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": ""}}]);
                        self.chunk(json!({"tool_calls": call}), Value::Null, out);
                    }
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            self.counted += 1;
                            self.chunk(json!({"content": t}), Value::Null, out);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.start(out);
                let d = &v["delta"];
                let delta = match (d["type"].as_str(), v["index"].as_u64()) {
                    (Some("text_delta"), _) => json!({"content": d["text"]}),
                    (Some("thinking_delta"), _) => json!({"reasoning_content": d["thinking"]}),
                    (Some("input_json_delta"), Some(index)) => {
                        let Some(&(_, i)) = self.tool_index.iter().find(|t| t.0 == index) else {
                            return;
                        };
                        json!({"tool_calls": [{"index": i,
                            "function": {"arguments": d["partial_json"]}}]})
                    }
                    _ => return, // signature_delta and anything new.
                };
                self.counted += 1;
                self.chunk(delta, Value::Null, out);
            }
            "message_delta" => {
                self.start(out);
                self.report_usage(&v["usage"]);
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.chunk(json!({}), json!(super::finish_reason(r)), out);
                }
            }
            "message_stop" => {
                self.start(out);
                if self.include_usage {
                    let usage = openai_usage_json(&self.usage(), self.cached);
                    self.write(
                        &json!({"id": self.id, "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model, "choices": [],
                        "usage": usage}),
                        out,
                    );
                }
                self.end(out);
            }
            "error" => {
                let error = super::errors::anthropic_error(502, &v);
                self.error = true;
                out.put_slice(&error.stream_event(ProviderDialect::OpenAiChat));
                self.end(out);
            }
            _ => {} // ping and events added later.
        }
    }

    /// Anthropic sends some counts in `message_start` and the rest in `message_delta`; each
    /// present count overwrites (output_tokens in `message_delta` is cumulative).
    fn report_usage(&mut self, u: &Value) {
        if !u.is_object() {
            return;
        }
        let num = |k: &str| {
            u.get(k)
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let (input, creation, read) = (
            num("input_tokens"),
            num("cache_creation_input_tokens"),
            num("cache_read_input_tokens"),
        );
        if input.is_some() || creation.is_some() || read.is_some() {
            if let Some(r) = read {
                self.cached = r;
            }
            let prompt = input
                .unwrap_or(0)
                .saturating_add(creation.unwrap_or(0))
                .saturating_add(read.unwrap_or(0));
            // A later partial report (only input_tokens, say) must not lower the total.
            self.usage.prompt_tokens = self.usage.prompt_tokens.max(prompt);
        }
        if let Some(o) = num("output_tokens") {
            self.usage.completion_tokens = o;
        }
        self.usage.source = UsageSource::Reported;
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            self.chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                out,
            );
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value, out: &mut BytesMut) {
        self.write(
            &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null,
                    "finish_reason": finish_reason}]}),
            out,
        );
    }

    fn write(&self, v: &Value, out: &mut BytesMut) {
        put_data(v.to_string().as_bytes(), out);
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        self.error = true;
        let error = GatewayError::with_message(ErrorKind::UpstreamError, message.to_owned());
        out.put_slice(&error.stream_event(ProviderDialect::OpenAiChat));
        self.end(out);
    }

    fn end(&mut self, out: &mut BytesMut) {
        out.put_slice(b"data: [DONE]\n\n");
        self.done = true;
    }
}

pub(crate) fn put_data(json: &[u8], out: &mut BytesMut) {
    out.reserve(json.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(json);
    out.put_slice(b"\n\n");
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
