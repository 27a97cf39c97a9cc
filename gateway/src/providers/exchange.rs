//! One answer's translation into the client's dialect, driven by the proxy's response phases:
//! the header first (status and content type), then the body chunk by chunk. A stream is passed
//! on as each upstream chunk arrives; a whole answer or an error answer is small and is held
//! until its end, since it can only be translated whole.

use bytes::{Bytes, BytesMut};
use wrapx_core::events::{Usage, UsageSource};

use super::{
    anthropic_error_to_openai, chat_response_to_messages, messages_response_to_chat,
    openai_error_to_anthropic, AnthropicToChatStream, ChatToAnthropicStream, ProviderDialect,
    TranslateError,
};

/// The largest whole answer held for translation; past it the answer counts as unreadable.
const MAX_WHOLE_BYTES: usize = 8 << 20;

/// Turns a provider's answer into the client's dialect, when the two differ.
#[derive(Debug)]
pub struct AnswerTranslator {
    direction: Direction,
    request_id: String,
    model: String,
    include_usage: bool,
    state: State,
    /// The usage of a whole answer, once translated.
    usage: Option<Usage>,
    failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// An Anthropic provider answering an OpenAI client.
    AnthropicToChat,
    /// An OpenAI-compatible provider answering an Anthropic client.
    ChatToAnthropic,
}

#[derive(Debug)]
enum State {
    /// Before the answer's header.
    Pending,
    AnthropicStream(Box<AnthropicToChatStream>),
    ChatStream(Box<ChatToAnthropicStream>),
    /// A whole 2xx answer so far (`None` once it outgrew the cap).
    Whole(Option<Vec<u8>>),
    /// An error answer so far, with the provider's status.
    Error(u16, Vec<u8>),
    /// The translated answer was sent.
    Done,
}

impl AnswerTranslator {
    /// `None` when the provider speaks the client's dialect and its answer passes untouched.
    /// `include_usage` is the OpenAI client's `stream_options.include_usage`; `model` names the
    /// answer until the provider names its own.
    pub fn new(
        client: ProviderDialect,
        provider: ProviderDialect,
        request_id: &str,
        model: &str,
        include_usage: bool,
    ) -> Option<Self> {
        let direction = match (client, provider) {
            (ProviderDialect::OpenAiChat, ProviderDialect::AnthropicMessages) => {
                Direction::AnthropicToChat
            }
            (ProviderDialect::AnthropicMessages, ProviderDialect::OpenAiChat) => {
                Direction::ChatToAnthropic
            }
            _ => return None,
        };
        Some(Self {
            direction,
            request_id: request_id.to_owned(),
            model: model.to_owned(),
            include_usage,
            state: State::Pending,
            usage: None,
            failed: false,
        })
    }

    /// The response header phase: the status and `content-type` the client gets. The caller
    /// drops `content-length`, since the body changes.
    ///
    /// An error's status is chosen here, before its body is read, so Anthropic's mapping goes
    /// by status alone; Anthropic's statuses and error types correspond one to one.
    pub fn header(&mut self, status: u16, event_stream: bool) -> (u16, &'static str) {
        if !(200..300).contains(&status) {
            self.state = State::Error(status, Vec::new());
            let status = match self.direction {
                Direction::AnthropicToChat => anthropic_error_to_openai(status, b"").0,
                Direction::ChatToAnthropic => openai_error_to_anthropic(status, b"").0,
            };
            return (status, "application/json");
        }
        if !event_stream {
            self.state = State::Whole(Some(Vec::new()));
            return (status, "application/json");
        }
        self.state = match self.direction {
            Direction::AnthropicToChat => State::AnthropicStream(Box::new(
                AnthropicToChatStream::new(&self.request_id, &self.model, self.include_usage),
            )),
            Direction::ChatToAnthropic => State::ChatStream(Box::new(ChatToAnthropicStream::new(
                &self.request_id,
                &self.model,
            ))),
        };
        (status, "text/event-stream")
    }

    /// The response body phase: one upstream chunk in, what the client gets now out (`None`
    /// while a whole answer is being held).
    pub fn body(&mut self, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        match &mut self.state {
            State::AnthropicStream(t) => {
                let mut out = BytesMut::new();
                if let Some(c) = chunk {
                    t.push(c, &mut out);
                }
                if end {
                    t.finish(&mut out);
                }
                Some(out.freeze())
            }
            State::ChatStream(t) => {
                let mut out = BytesMut::new();
                if let Some(c) = chunk {
                    t.push(c, &mut out);
                }
                if end {
                    t.finish(&mut out);
                }
                Some(out.freeze())
            }
            State::Whole(buf) => {
                if let Some(c) = chunk {
                    hold(buf, c);
                }
                if !end {
                    return None;
                }
                let held = buf.take();
                self.state = State::Done;
                Some(self.translate_whole(held))
            }
            State::Error(status, buf) => {
                if let Some(c) = chunk {
                    if buf.len() + c.len() <= MAX_WHOLE_BYTES {
                        buf.extend_from_slice(c);
                    }
                }
                if !end {
                    return None;
                }
                let (status, held) = (*status, std::mem::take(buf));
                self.state = State::Done;
                let (_, body) = match self.direction {
                    Direction::AnthropicToChat => anthropic_error_to_openai(status, &held),
                    Direction::ChatToAnthropic => openai_error_to_anthropic(status, &held),
                };
                Some(Bytes::from(body))
            }
            // No header was seen (or the answer is over): nothing to translate against.
            State::Pending | State::Done => chunk.map(Bytes::copy_from_slice),
        }
    }

    /// The answer's usage so far, as the provider reported it or as counted; `None` when
    /// nothing is known.
    pub fn usage(&self) -> Option<Usage> {
        let usage = match &self.state {
            State::AnthropicStream(t) => t.usage(),
            State::ChatStream(t) => t.usage(),
            _ => self.usage?,
        };
        (usage.source != UsageSource::None).then_some(usage)
    }

    /// Whether the answer could not be translated or carried an error inside a 2xx (an
    /// upstream error for the request's outcome).
    pub fn failed(&self) -> bool {
        match &self.state {
            State::AnthropicStream(t) => t.saw_error(),
            State::ChatStream(t) => t.saw_error(),
            _ => self.failed,
        }
    }

    fn translate_whole(&mut self, held: Option<Vec<u8>>) -> Bytes {
        let result = match &held {
            None => Err(TranslateError::InvalidUpstream(format!(
                "the answer is larger than {MAX_WHOLE_BYTES} bytes"
            ))),
            Some(b) => match self.direction {
                Direction::AnthropicToChat => messages_response_to_chat(b, &self.request_id),
                Direction::ChatToAnthropic => chat_response_to_messages(b, &self.request_id),
            },
        };
        match result {
            Ok((body, usage)) => {
                self.usage = Some(usage);
                Bytes::from(body)
            }
            Err(e) => {
                self.failed = true;
                // The status is already on its way; the body says what happened, opaquely.
                e.to_error().body_in(match self.direction {
                    Direction::AnthropicToChat => ProviderDialect::OpenAiChat,
                    Direction::ChatToAnthropic => ProviderDialect::AnthropicMessages,
                })
            }
        }
    }
}

fn hold(buf: &mut Option<Vec<u8>>, chunk: &[u8]) {
    if let Some(b) = buf {
        if b.len() + chunk.len() <= MAX_WHOLE_BYTES {
            b.extend_from_slice(chunk);
        } else {
            *buf = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::{json, Value};

    fn translator(client: ProviderDialect, provider: ProviderDialect) -> AnswerTranslator {
        AnswerTranslator::new(client, provider, "r1", "pinned", true).unwrap()
    }

    fn json_of(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn same_dialect_needs_no_translator() {
        for d in [
            ProviderDialect::OpenAiChat,
            ProviderDialect::AnthropicMessages,
        ] {
            assert!(AnswerTranslator::new(d, d, "r", "m", false).is_none());
        }
    }

    #[test]
    fn a_whole_answer_is_held_then_translated_with_its_usage() {
        let mut t = translator(
            ProviderDialect::OpenAiChat,
            ProviderDialect::AnthropicMessages,
        );
        assert_eq!(t.header(200, false), (200, "application/json"));
        let body = json!({"type": "message", "model": "claude", "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 3}})
        .to_string();
        let (a, b) = body.as_bytes().split_at(10);
        assert!(t.body(Some(a), false).is_none());
        let out = json_of(&t.body(Some(b), true).unwrap());
        assert_eq!(out["choices"][0]["message"]["content"], "hi");
        assert_eq!(out["id"], "chatcmpl-r1");
        let u = t.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 3));
        assert!(!t.failed());
    }

    #[test]
    fn an_unreadable_answer_fails_opaquely() {
        let mut t = translator(
            ProviderDialect::AnthropicMessages,
            ProviderDialect::OpenAiChat,
        );
        t.header(200, false);
        let out = json_of(&t.body(Some(b"{\"oops\":1}"), true).unwrap());
        assert_eq!(out["type"], "error");
        assert_eq!(out["error"]["type"], "api_error");
        assert!(t.failed());
        assert!(t.usage().is_none());
    }

    #[test]
    fn errors_map_status_and_shape() {
        let mut t = translator(
            ProviderDialect::OpenAiChat,
            ProviderDialect::AnthropicMessages,
        );
        assert_eq!(t.header(429, false), (429, "application/json"));
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let out = json_of(&t.body(Some(body), true).unwrap());
        assert_eq!(
            out,
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})
        );
        assert!(!t.failed());

        let mut t = translator(
            ProviderDialect::AnthropicMessages,
            ProviderDialect::OpenAiChat,
        );
        assert_eq!(t.header(401, false), (401, "application/json"));
        let out = json_of(
            &t.body(Some(br#"{"error":{"message":"bad key","type":"x"}}"#), true)
                .unwrap(),
        );
        assert_eq!(out["error"]["type"], "authentication_error");
        assert_eq!(out["error"]["message"], "bad key");
    }

    #[test]
    fn a_stream_is_passed_on_event_by_event() {
        let mut t = translator(
            ProviderDialect::OpenAiChat,
            ProviderDialect::AnthropicMessages,
        );
        assert_eq!(t.header(200, true), (200, "text/event-stream"));
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
        let first = t.body(Some(start), false).unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .contains("\"role\":\"assistant\""));
        let delta = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"yo\"}}\n\n";
        let (a, b) = delta.split_at(20);
        assert!(t.body(Some(a), false).unwrap().is_empty());
        assert!(std::str::from_utf8(&t.body(Some(b), false).unwrap())
            .unwrap()
            .contains("\"content\":\"yo\""));
        let end = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let last = t.body(Some(end), true).unwrap();
        assert!(std::str::from_utf8(&last)
            .unwrap()
            .ends_with("data: [DONE]\n\n"));
        let u = t.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (9, 4));
        assert!(!t.failed());
    }
}
