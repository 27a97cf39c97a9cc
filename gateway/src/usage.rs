//! Token usage read from the answer on its way through, without holding any chunk back: from
//! the JSON of a whole answer, or from the SSE events of a stream, in OpenAI's dialect or
//! Anthropic's. A stream cut short is counted from the content chunks that passed (one token
//! each, as providers stream them).
//!
//! Per chunk, the stream scanner only searches bytes; it allocates nothing except when a line is
//! split across chunks and longer than any seen before (the carry buffer keeps its capacity).

use memchr::memmem;
use serde::Deserialize;
use wrapx_core::events::{Usage, UsageSource};

/// The largest whole answer kept to read its usage from; past it the usage is unknown.
const MAX_JSON_BYTES: usize = 8 << 20;

#[derive(Debug)]
pub struct UsageMeter {
    stream: bool,
    /// The answer is in Anthropic's Messages dialect rather than OpenAI's.
    anthropic: bool,
    /// Non-stream: the answer so far. Stream: the start of a line split across chunks.
    buf: Vec<u8>,
    overflow: bool,
    reported: Option<Usage>,
    counted_completion: u32,
    done: bool,
    bytes: u64,
    /// The start of the answer, for the event's `response_data`.
    head: Vec<u8>,
    head_max: usize,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<ReportedUsage>,
}

/// OpenAI's names and Anthropic's: an answer carries one set, the other stays 0.
#[derive(Deserialize)]
struct ReportedUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    cache_creation_input_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

/// An Anthropic stream event: `message_start` has its usage in `message`, `message_delta` at
/// the top.
#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(default)]
    message: Option<WithUsage>,
    #[serde(default)]
    usage: Option<ReportedUsage>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    reasoning_tokens: u32,
}

impl From<ReportedUsage> for Usage {
    fn from(u: ReportedUsage) -> Self {
        Usage {
            prompt_tokens: u
                .prompt_tokens
                .saturating_add(u.input_tokens)
                .saturating_add(u.cache_creation_input_tokens)
                .saturating_add(u.cache_read_input_tokens),
            completion_tokens: u.completion_tokens.saturating_add(u.output_tokens),
            reasoning_tokens: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
            source: UsageSource::Reported,
        }
    }
}

impl UsageMeter {
    pub fn new(stream: bool, head_max: usize) -> Self {
        Self {
            stream,
            anthropic: false,
            buf: Vec::new(),
            overflow: false,
            reported: None,
            counted_completion: 0,
            done: false,
            bytes: 0,
            head: Vec::new(),
            head_max,
        }
    }

    /// A meter for an answer in Anthropic's Messages dialect.
    pub fn anthropic(stream: bool, head_max: usize) -> Self {
        Self {
            anthropic: true,
            ..Self::new(stream, head_max)
        }
    }

    /// Looks at one chunk of the answer as it passes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        if self.head.len() < self.head_max {
            let take = (self.head_max - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if !self.stream {
            if self.buf.len() + chunk.len() <= MAX_JSON_BYTES {
                self.buf.extend_from_slice(chunk);
            } else {
                self.overflow = true;
            }
            return;
        }
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.buf.is_empty() {
                self.line(line);
            } else {
                self.buf.extend_from_slice(line);
                let carried = std::mem::take(&mut self.buf);
                self.line(&carried);
                self.buf = carried;
                self.buf.clear();
            }
        }
        if !rest.is_empty() {
            if self.buf.len() + rest.len() <= MAX_JSON_BYTES {
                self.buf.extend_from_slice(rest);
            } else {
                self.buf.clear();
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if self.anthropic {
            self.anthropic_line(data);
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        if memmem::find(data, b"\"usage\":{").is_some() {
            if let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice::<WithUsage>(data) {
                self.reported = Some(u.into());
            }
        }
        if has_content(data) {
            self.counted_completion = self.counted_completion.saturating_add(1);
        }
    }

    /// Anthropic reports input tokens in `message_start` and the running output count in
    /// `message_delta`: each report can only raise what is known.
    fn anthropic_line(&mut self, data: &[u8]) {
        if memmem::find(data, b"\"usage\":{").is_some() {
            if let Ok(e) = serde_json::from_slice::<AnthropicEvent>(data) {
                let reported = e.usage.or(e.message.and_then(|m| m.usage));
                if let Some(u) = reported.map(Usage::from) {
                    let known = self.reported.unwrap_or_default();
                    self.reported = Some(Usage {
                        prompt_tokens: known.prompt_tokens.max(u.prompt_tokens),
                        completion_tokens: known.completion_tokens.max(u.completion_tokens),
                        reasoning_tokens: 0,
                        source: UsageSource::Reported,
                    });
                }
            }
        }
        if memmem::find(data, b"\"type\":\"content_block_delta\"").is_some() {
            self.counted_completion = self.counted_completion.saturating_add(1);
        } else if memmem::find(data, b"\"type\":\"message_stop\"").is_some() {
            self.done = true;
        }
    }

    /// Whether the stream ended with its last event (`[DONE]`, or Anthropic's `message_stop`).
    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// Whether the answer is read in Anthropic's dialect (else OpenAI's).
    pub fn is_anthropic(&self) -> bool {
        self.anthropic
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The usage once the answer is over: as reported, or counted when the provider never said.
    pub fn finish(&mut self, prompt_estimate: u32) -> Usage {
        if !self.stream && self.reported.is_none() && !self.overflow && !self.buf.is_empty() {
            if let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice::<WithUsage>(&self.buf)
            {
                self.reported = Some(u.into());
            }
        }
        if let Some(mut u) = self.reported {
            // Anthropic's input count comes first; a stream cut before its final output count
            // has only the deltas that passed to go by.
            if self.anthropic && self.stream {
                u.completion_tokens = u.completion_tokens.max(self.counted_completion);
            }
            return u;
        }
        if self.stream && self.counted_completion > 0 {
            return Usage {
                prompt_tokens: prompt_estimate,
                completion_tokens: self.counted_completion,
                reasoning_tokens: 0,
                source: UsageSource::Counted,
            };
        }
        Usage::default()
    }

    /// The start of the answer for the event: JSON when it parses whole, else text.
    pub fn response_data(&self) -> serde_json::Value {
        if self.head.is_empty() {
            return serde_json::Value::Null;
        }
        if !self.stream && (self.head.len() as u64) == self.bytes {
            if let Ok(v) = serde_json::from_slice(&self.head) {
                return v;
            }
        }
        serde_json::Value::String(String::from_utf8_lossy(&self.head).into_owned())
    }
}

/// A chunk whose delta carries text (content, reasoning or tool arguments).
fn has_content(data: &[u8]) -> bool {
    for needle in [&b"content\":\""[..], b"arguments\":\""] {
        let mut from = 0;
        while let Some(i) = memmem::find(&data[from..], needle) {
            let after = from + i + needle.len();
            if data.get(after).is_some_and(|b| *b != b'"') {
                return true;
            }
            from = after;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn reads_reported_usage_whatever_the_chunking() {
        for size in [1, 2, 7, 50, STREAM.len()] {
            let mut m = UsageMeter::new(true, 64);
            for chunk in STREAM.as_bytes().chunks(size) {
                m.feed(chunk);
            }
            let u = m.finish(99);
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.source),
                (10, 2, UsageSource::Reported),
                "size {size}"
            );
            assert!(m.saw_done());
        }
    }

    #[test]
    fn counts_a_stream_cut_short() {
        let cut = &STREAM[..STREAM.find("finish_reason").unwrap()];
        let mut m = UsageMeter::new(true, 64);
        m.feed(cut.as_bytes());
        let u = m.finish(7);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.source),
            (7, 2, UsageSource::Counted)
        );
        assert!(!m.saw_done());
    }

    #[test]
    fn reads_whole_answers_and_ignores_junk() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let mut m = UsageMeter::new(false, 1024);
        for c in body.chunks(5) {
            m.feed(c);
        }
        let u = m.finish(0);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (3, 4, 1)
        );
        assert_eq!(m.response_data()["id"], "x");

        let mut junk = UsageMeter::new(true, 8);
        junk.feed(b"\x00\xffdata: {\"usage\":{oops\n\nrandom\n");
        assert_eq!(junk.finish(0), Usage::default());
        assert_eq!(
            UsageMeter::new(false, 8).finish(0).source,
            UsageSource::None
        );
    }

    #[test]
    fn reads_anthropic_answers_and_streams() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"b\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for size in [1, 9, stream.len()] {
            let mut m = UsageMeter::anthropic(true, 64);
            for chunk in stream.as_bytes().chunks(size) {
                m.feed(chunk);
            }
            assert!(m.saw_done());
            let u = m.finish(99);
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.source),
                (12, 7, UsageSource::Reported),
                "size {size}"
            );
        }
        let cut = &stream[..stream.find("event: message_delta").unwrap()];
        let mut m = UsageMeter::anthropic(true, 64);
        m.feed(cut.as_bytes());
        assert!(!m.saw_done());
        assert_eq!(m.finish(5).completion_tokens, 2);

        let mut whole = UsageMeter::anthropic(false, 1024);
        whole.feed(
            br#"{"type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":6}}"#,
        );
        let u = whole.finish(0);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 6));
    }
}

/// The usage reader takes whatever the provider streams, however it is cut.
#[cfg(test)]
mod junk {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_chunks_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
            stream in any::<bool>(),
        ) {
            for mut meter in [UsageMeter::new(stream, 64), UsageMeter::anthropic(stream, 64)] {
                for chunk in &chunks {
                    meter.feed(chunk);
                }
                let _ = meter.finish(7);
            }
        }

        #[test]
        fn a_real_stream_reads_the_same_however_it_is_split(
            cuts in prop::collection::vec(0usize..400, 0..12),
        ) {
            let stream = concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\n",
                "data: [DONE]\n\n",
            ).as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
            cuts.sort_unstable();
            let mut meter = UsageMeter::new(true, 64);
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                meter.feed(&stream[from..cut.max(from)]);
                from = cut.max(from);
            }
            let usage = meter.finish(99);
            prop_assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 2));
            prop_assert_eq!(usage.source, UsageSource::Reported);
        }
    }
}
