//! OpenAI `chat.completion.chunk` stream → Anthropic Messages stream, chunk by chunk.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};
use wrapx_core::events::{Usage, UsageSource};

use crate::errors::{ErrorKind, GatewayError};
use crate::providers::sse::{SseDecoder, SseEvent};
use crate::providers::ProviderDialect;
use crate::providers::MAX_PARTIAL_EVENT_BYTES;

/// Translates an OpenAI SSE stream into Anthropic's event sequence: `message_start`, then per
/// content block `content_block_start` / `content_block_delta`… / `content_block_stop`
/// (`reasoning_content` → a thinking block, `content` → a text block, each tool call → a
/// `tool_use` block with `input_json_delta`s), then `message_delta` (stop reason, usage) and
/// `message_stop` once `data: [DONE]` arrives, so the usage chunk that precedes it is in.
/// An upstream error chunk becomes an `error` event; a stream cut before its finish reason
/// ends with an `error` event too. Non-JSON data is skipped.
#[derive(Debug)]
pub struct ChatToAnthropicStream {
    sse: SseDecoder,
    id: String,
    model: String,
    usage: Usage,
    counted: u32,
    /// The open content block: its index and what it holds.
    open: Option<(u32, Block)>,
    next_block: u32,
    /// OpenAI tool call index → Anthropic block index.
    tools: Vec<(u64, u32)>,
    stop_reason: Option<&'static str>,
    started: bool,
    done: bool,
    error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    Tool,
}

impl ChatToAnthropicStream {
    pub fn new(request_id: &str, model: &str) -> Self {
        Self {
            sse: SseDecoder::new(MAX_PARTIAL_EVENT_BYTES),
            id: format!("msg_{request_id}"),
            model: model.to_owned(),
            usage: Usage::default(),
            counted: 0,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop_reason: None,
            started: false,
            done: false,
            error: false,
        }
    }

    /// Feeds upstream bytes (any split); appends the events of every chunk now complete.
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

    /// Ends the stream. Without `[DONE]` it still ends normally when a finish reason came,
    /// else with an `error` event.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let Some(ev) = self.sse.finish() {
            self.event(ev, out);
        }
        if self.done {
            return;
        }
        if self.stop_reason.is_some() {
            self.complete(out);
        } else {
            self.fail("The provider's stream ended early.", out);
        }
    }

    /// The usage so far: reported by the provider, else counted from content pieces.
    pub fn usage(&self) -> Usage {
        if self.usage.source != UsageSource::Reported && self.counted > 0 {
            return Usage {
                completion_tokens: self.counted,
                source: UsageSource::Counted,
                ..self.usage
            };
        }
        self.usage
    }

    pub fn saw_error(&self) -> bool {
        self.error
    }

    fn event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if ev.data.trim_ascii() == b"[DONE]" {
            self.complete(out);
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        if v["error"].is_object() {
            let error = super::errors::openai_error(502, &v);
            self.error = true;
            self.start(out);
            out.put_slice(&error.stream_event(ProviderDialect::AnthropicMessages));
            self.done = true;
            return;
        }
        self.start(out);
        if v["usage"].is_object() {
            self.usage = super::response::usage_of(&v["usage"]);
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(r) = delta["reasoning_content"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            let i = self.open_block(
                Block::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                out,
            );
            self.counted += 1;
            self.emit(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "thinking_delta", "thinking": r}}),
                out,
            );
        }
        if let Some(t) = delta["content"].as_str().filter(|s| !s.is_empty()) {
            let i = self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
            self.counted += 1;
            self.emit(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "text_delta", "text": t}}),
                out,
            );
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for c in calls {
                self.tool_call(c, out);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop_reason = Some(super::stop_reason(f));
            self.close(out);
        }
    }

    fn tool_call(&mut self, c: &Value, out: &mut BytesMut) {
        let index = c["index"].as_u64().unwrap_or(0);
        let block = match self.tools.iter().find(|t| t.0 == index) {
            Some(&(_, b)) => b,
            None => {
                self.close(out);
                let b = self.next_block;
                self.next_block += 1;
                self.tools.push((index, b));
                self.open = Some((b, Block::Tool));
                let id = c["id"].as_str().unwrap_or("");
                let name = c["function"]["name"].as_str().unwrap_or("");
                self.emit(
                    "content_block_start",
                    &json!({"type": "content_block_start",
                    "index": b, "content_block": {"type": "tool_use", "id": id, "name": name,
                    "input": {}}}),
                    out,
                );
                b
            }
        };
        if let Some(args) = c["function"]["arguments"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            self.counted += 1;
            self.emit(
                "content_block_delta",
                &json!({"type": "content_block_delta",
                "index": block, "delta": {"type": "input_json_delta", "partial_json": args}}),
                out,
            );
        }
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn open_block(&mut self, kind: Block, start: Value, out: &mut BytesMut) -> u32 {
        if let Some((i, k)) = self.open {
            if k == kind && kind != Block::Tool {
                return i;
            }
        }
        self.close(out);
        let i = self.next_block;
        self.next_block += 1;
        self.open = Some((i, kind));
        self.emit(
            "content_block_start",
            &json!({"type": "content_block_start", "index": i,
            "content_block": start}),
            out,
        );
        i
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((i, _)) = self.open.take() {
            self.emit(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
                out,
            );
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            self.emit(
                "message_start",
                &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                out,
            );
        }
    }

    fn complete(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let usage = self.usage();
        self.emit("message_delta", &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}}), out);
        self.emit("message_stop", &json!({"type": "message_stop"}), out);
        self.done = true;
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        self.error = true;
        self.start(out);
        let error = GatewayError::with_message(ErrorKind::UpstreamError, message.to_owned());
        out.put_slice(&error.stream_event(ProviderDialect::AnthropicMessages));
        self.done = true;
    }

    fn emit(&self, name: &str, v: &Value, out: &mut BytesMut) {
        put_event(name, v.to_string().as_bytes(), out);
    }
}

fn put_event(name: &str, json: &[u8], out: &mut BytesMut) {
    out.reserve(name.len() + json.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json);
    out.put_slice(b"\n\n");
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
