//! Token usage read from the answer on its way through, without holding any chunk back: from
//! the JSON of a whole answer, or from the SSE events of a stream, in OpenAI's dialect or
//! Anthropic's. A stream cut short is counted from the content chunks that passed (one token
//! each, as providers stream them). A passed-through OpenAI stream can also lose its usage
//! chunk on the way, once read, when the client did not ask for it ([`UsageMeter::pass`]).
//!
//! The stream is read as SSE ([`SseScanner`]: any line ending, comments, multi-line `data:`),
//! and usage is found in any valid JSON, spaced or pretty-printed. Per event, a byte search
//! for a key followed by its value (`"usage"`, whitespace, `:`, whitespace, `{`) picks the few
//! events worth parsing; only those go through serde. A quoted key followed by a colon cannot
//! occur inside a JSON string (its quotes would be escaped), so the search is not fooled by
//! text. Nothing is allocated per chunk once the scanner's buffers have grown to the largest
//! event.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::de::IgnoredAny;
use serde::Deserialize;
use wrapx_core::events::{Usage, UsageSource};

use crate::providers::sse::{SseRef, SseScanner};

/// The largest whole answer kept to read its usage from, and the largest stream event; past
/// it the usage is unknown (a stream's next events are still read).
const MAX_JSON_BYTES: usize = 8 << 20;

#[derive(Debug)]
pub struct UsageMeter {
    stream: bool,
    /// Non-stream: the answer so far.
    buf: Vec<u8>,
    overflow: bool,
    /// Stream: its events.
    sse: SseScanner,
    read: StreamRead,
    /// Set when the client gets the stream without its usage chunk.
    hide: Option<UsageChunkFilter>,
    bytes: u64,
    /// The start of the answer, for the event's `response_data`.
    head: Vec<u8>,
    head_max: usize,
}

/// What the stream's events have told so far.
#[derive(Debug, Default)]
struct StreamRead {
    /// The answer is in Anthropic's Messages dialect rather than OpenAI's.
    anthropic: bool,
    reported: Option<Usage>,
    counted_completion: u32,
    done: bool,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<ReportedUsage>,
    /// Only its length matters (a `Vec` of `IgnoredAny` never allocates).
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
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
            buf: Vec::new(),
            overflow: false,
            sse: SseScanner::new(MAX_JSON_BYTES),
            read: StreamRead::default(),
            hide: None,
            bytes: 0,
            head: Vec::new(),
            head_max,
        }
    }

    /// A meter for an answer in Anthropic's Messages dialect.
    pub fn anthropic(stream: bool, head_max: usize) -> Self {
        let mut meter = Self::new(stream, head_max);
        meter.read.anthropic = true;
        meter
    }

    /// When `hide` (an OpenAI stream passed through to a client that did not ask for
    /// `stream_options.include_usage`), [`Self::pass`] takes the usage chunk (`choices: []`)
    /// out of what the client gets, after reading it.
    #[must_use]
    pub fn hiding_usage_chunk(mut self, hide: bool) -> Self {
        self.hide = (hide && self.stream && !self.read.anthropic).then(UsageChunkFilter::default);
        self
    }

    /// The proxy's body phase: reads the chunk and, when hiding the usage chunk, rewrites it
    /// for the client. Hiding holds back an event split across chunks until its end has come
    /// (a client cannot use half an event anyway); a chunk of whole events passes untouched.
    pub fn pass(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if self.hide.is_none() {
            if let Some(chunk) = body.as_ref() {
                self.feed(chunk);
            }
            if end_of_stream {
                self.end_stream();
            }
            return;
        }
        let Some(chunk) = body.take() else {
            if end_of_stream {
                self.end_stream();
                *body = self.flush_held();
            }
            return;
        };
        self.count(&chunk);
        let mut drops = Vec::new();
        // The LF of a CRLF that ended the last event before this chunk belongs to that event,
        // and goes where it went.
        let settled_lf = self.sse.after_cr()
            && chunk.first() == Some(&b'\n')
            && self.hide.as_ref().is_some_and(|f| f.held.is_empty());
        if settled_lf && self.hide.as_ref().is_some_and(|f| f.last_dropped) {
            drops.push((0, 1));
        }
        let mut rest: &[u8] = &chunk;
        let mut last_end = usize::from(settled_lf);
        loop {
            let Ok(next) = self.sse.next(&mut rest) else {
                continue;
            };
            let Some(event) = next else { break };
            let usage_chunk = self.read.event(event);
            let end = chunk.len() - rest.len();
            if usage_chunk {
                drops.push((last_end, end));
            }
            if let Some(filter) = self.hide.as_mut() {
                filter.last_dropped = usage_chunk;
            }
            last_end = end;
        }
        let mut out = match self.hide.as_mut() {
            Some(filter) => filter.apply(&chunk, last_end, &drops),
            None => chunk,
        };
        if end_of_stream {
            self.end_stream();
            if let Some(held) = self.flush_held() {
                out = [out, held].concat().into();
            }
        }
        *body = Some(out);
    }

    /// The held start of an unfinished event, passed on as it is when the stream ends.
    fn flush_held(&mut self) -> Option<Bytes> {
        let held = std::mem::take(&mut self.hide.as_mut()?.held);
        (!held.is_empty()).then(|| held.freeze())
    }

    /// Looks at one chunk of the answer as it passes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.count(chunk);
        if !self.stream {
            if self.buf.len() + chunk.len() <= MAX_JSON_BYTES {
                self.buf.extend_from_slice(chunk);
            } else {
                self.overflow = true;
            }
            return;
        }
        let mut rest = chunk;
        loop {
            match self.sse.next(&mut rest) {
                Ok(Some(event)) => {
                    self.read.event(event);
                }
                Ok(None) => break,
                // The scanner dropped the oversized event and reads on.
                Err(_) => {}
            }
        }
    }

    fn count(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        if self.head.len() < self.head_max {
            let take = (self.head_max - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    /// The stream is over: a last event without its blank line still counts.
    fn end_stream(&mut self) {
        if self.stream {
            if let Some(event) = self.sse.finish() {
                self.read.event(event);
            }
        }
    }

    /// Whether the stream ended with its last event (`[DONE]`, or Anthropic's `message_stop`).
    pub fn saw_done(&self) -> bool {
        self.read.done
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The usage once the answer is over: as reported, or counted when the provider never said.
    pub fn finish(&mut self, prompt_estimate: u32) -> Usage {
        self.end_stream();
        if !self.stream && self.read.reported.is_none() && !self.overflow && !self.buf.is_empty() {
            if let Ok(WithUsage { usage: Some(u), .. }) =
                serde_json::from_slice::<WithUsage>(&self.buf)
            {
                self.read.reported = Some(u.into());
            }
        }
        let read = &self.read;
        if let Some(mut u) = read.reported {
            // Anthropic's input count comes first; a stream cut before its final output count
            // has only the deltas that passed to go by.
            if read.anthropic && self.stream {
                u.completion_tokens = u.completion_tokens.max(read.counted_completion);
            }
            return u;
        }
        if self.stream && read.counted_completion > 0 {
            return Usage {
                prompt_tokens: prompt_estimate,
                completion_tokens: read.counted_completion,
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

impl StreamRead {
    /// Reads one event; true when it is OpenAI's usage chunk (`choices: []` with `usage`).
    fn event(&mut self, event: SseRef<'_>) -> bool {
        let data = event.data.trim_ascii();
        if self.anthropic {
            self.anthropic_event(event.event, data);
            return false;
        }
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        let mut usage_chunk = false;
        if has_value(data, b"\"usage\"", |v| v.starts_with(b"{")) {
            if let Ok(WithUsage {
                usage: Some(u),
                choices,
            }) = serde_json::from_slice::<WithUsage>(data)
            {
                self.reported = Some(u.into());
                usage_chunk = choices.is_some_and(|c| c.is_empty());
            }
        }
        if has_content(data) {
            self.counted_completion = self.counted_completion.saturating_add(1);
        }
        usage_chunk
    }

    /// Anthropic reports input tokens in `message_start` and the running output count in
    /// `message_delta`: each report can only raise what is known. The `type` in the data is
    /// authoritative; the `event:` name stands in when the data has none.
    fn anthropic_event(&mut self, name: &[u8], data: &[u8]) {
        if has_value(data, b"\"usage\"", |v| v.starts_with(b"{")) {
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
        let is = |kind: &[u8]| {
            let mut found = false;
            let typed = has_value(data, b"\"type\"", |v| {
                found = true;
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_prefix(kind))
                    .is_some_and(|v| v.starts_with(b"\""))
            });
            typed || (!found && name == kind)
        };
        if is(b"content_block_delta") {
            self.counted_completion = self.counted_completion.saturating_add(1);
        } else if is(b"message_stop") {
            self.done = true;
        }
    }
}

/// Drops whole events from a passed-through stream, holding back the unfinished one.
#[derive(Debug, Default)]
struct UsageChunkFilter {
    /// The start of an event whose end has not arrived.
    held: BytesMut,
    /// The last complete event was dropped.
    last_dropped: bool,
}

impl UsageChunkFilter {
    /// What the client gets of `chunk`: the held start, then the chunk's bytes up to
    /// `last_end` (the end of its last complete event) without the `drops` (spans of dropped
    /// events; one starting at 0 takes the held start with it). The rest is held.
    fn apply(&mut self, chunk: &Bytes, last_end: usize, drops: &[(usize, usize)]) -> Bytes {
        if last_end == 0 {
            // No event ended in this chunk.
            self.held.extend_from_slice(chunk);
            return Bytes::new();
        }
        if self.held.is_empty() && drops.is_empty() {
            let out = chunk.slice(..last_end);
            self.held.extend_from_slice(&chunk[last_end..]);
            return out;
        }
        let mut out = BytesMut::with_capacity(self.held.len() + last_end);
        if drops.first().is_none_or(|d| d.0 != 0) {
            out.extend_from_slice(&self.held);
        }
        self.held.clear();
        let mut from = 0;
        for &(start, end) in drops {
            out.extend_from_slice(&chunk[from..start]);
            from = end;
        }
        out.extend_from_slice(&chunk[from..last_end]);
        self.held.extend_from_slice(&chunk[last_end..]);
        out.freeze()
    }
}

/// Whether some key in `data` ending in `key` (its closing quote included) is followed, after
/// optional whitespace, a colon and whitespace, by a value that `accept` takes.
fn has_value(data: &[u8], key: &[u8], mut accept: impl FnMut(&[u8]) -> bool) -> bool {
    memmem::find_iter(data, key).any(|i| {
        let after = skip_ws(&data[i + key.len()..]);
        after
            .strip_prefix(b":")
            .is_some_and(|value| accept(skip_ws(value)))
    })
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(s.len());
    &s[n..]
}

/// A chunk whose delta carries text (content, reasoning or tool arguments).
fn has_content(data: &[u8]) -> bool {
    let non_empty_string = |v: &[u8]| v.len() > 1 && v[0] == b'"' && v[1] != b'"';
    has_value(data, b"content\"", non_empty_string)
        || has_value(data, b"arguments\"", non_empty_string)
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

/// Any valid JSON and any valid SSE, as the mock provider lays them out, however split; and the
/// usage chunk a client did not ask for.
#[cfg(test)]
mod layouts {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use bytes::Bytes;
    use wrapx_benches::mock_llm::Format;

    use super::*;
    use crate::providers::testkit::{laid_out, splits};

    const FORMATS: [Format; 4] = [
        Format::Compact,
        Format::Spaced,
        Format::Pretty,
        Format::Crlf,
    ];
    const MODES: [Option<u64>; 5] = [None, Some(0), Some(1), Some(5), Some(42)];

    const OPENAI: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hé\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo 🌍\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"é\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"b\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn read(mut meter: UsageMeter, input: &[u8], mode: Option<u64>) -> (UsageMeter, Vec<u8>) {
        let mut out = Vec::new();
        let pieces = splits(input, mode);
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(piece));
            meter.pass(&mut body, i == last);
            out.extend_from_slice(&body.unwrap_or_default());
        }
        (meter, out)
    }

    fn tokens(u: Usage) -> (u32, u32, UsageSource) {
        (u.prompt_tokens, u.completion_tokens, u.source)
    }

    #[test]
    fn openai_streams_in_every_layout() {
        for format in FORMATS {
            let input = laid_out(OPENAI, format);
            for mode in MODES {
                let (mut m, out) = read(UsageMeter::new(true, 64), &input, mode);
                assert!(m.saw_done(), "{format} {mode:?}");
                assert_eq!(out, input, "passes untouched");
                assert_eq!(
                    tokens(m.finish(99)),
                    (10, 2, UsageSource::Reported),
                    "{format} {mode:?}"
                );
            }
            // Cut before the usage: counted from the content that passed.
            let cut = laid_out(
                &OPENAI[..OPENAI.find("data: {\"choices\":[{\"delta\":{},").unwrap()],
                format,
            );
            let (mut m, _) = read(UsageMeter::new(true, 64), &cut, Some(3));
            assert!(!m.saw_done());
            assert_eq!(
                tokens(m.finish(7)),
                (7, 2, UsageSource::Counted),
                "{format}"
            );
        }
    }

    #[test]
    fn anthropic_streams_in_every_layout() {
        for format in FORMATS {
            let input = laid_out(ANTHROPIC, format);
            for mode in MODES {
                let (mut m, _) = read(UsageMeter::anthropic(true, 64), &input, mode);
                assert!(m.saw_done(), "{format} {mode:?}");
                assert_eq!(
                    tokens(m.finish(99)),
                    (12, 7, UsageSource::Reported),
                    "{format} {mode:?}"
                );
            }
            let cut = laid_out(
                &ANTHROPIC[..ANTHROPIC.find("event: message_delta").unwrap()],
                format,
            );
            let (mut m, _) = read(UsageMeter::anthropic(true, 64), &cut, Some(9));
            assert!(!m.saw_done());
            assert_eq!(
                tokens(m.finish(5)),
                (12, 2, UsageSource::Reported),
                "{format}"
            );
        }
    }

    #[test]
    fn whole_answers_in_every_layout() {
        let openai = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let anthropic =
            br#"{"type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":6}}"#;
        for format in FORMATS {
            let body = format.json(Bytes::from_static(openai));
            let (mut m, _) = read(UsageMeter::new(false, 1024), &body, Some(2));
            assert_eq!(
                tokens(m.finish(0)),
                (3, 4, UsageSource::Reported),
                "{format}"
            );
            assert_eq!(m.response_data()["id"], "x");
            let body = format.json(Bytes::from_static(anthropic));
            let (mut m, _) = read(UsageMeter::anthropic(false, 1024), &body, Some(2));
            assert_eq!(
                tokens(m.finish(0)),
                (4, 6, UsageSource::Reported),
                "{format}"
            );
        }
    }

    #[test]
    fn the_usage_chunk_is_hidden_when_not_asked_for_and_still_read() {
        let usage_event = OPENAI
            .split_inclusive("\n\n")
            .find(|e| e.contains("\"choices\":[]"))
            .unwrap();
        for format in FORMATS {
            let input = laid_out(OPENAI, format);
            let want = laid_out(&OPENAI.replace(usage_event, ""), format);
            for mode in MODES {
                let meter = UsageMeter::new(true, 64).hiding_usage_chunk(true);
                let (mut m, out) = read(meter, &input, mode);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want),
                    "{format} {mode:?}"
                );
                assert!(m.saw_done());
                assert_eq!(tokens(m.finish(99)), (10, 2, UsageSource::Reported));
            }
        }
        // A usage in a chunk that has choices is not the usage chunk: it stays.
        let mixed = "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n";
        let (_, out) = read(
            UsageMeter::new(true, 64).hiding_usage_chunk(true),
            mixed.as_bytes(),
            None,
        );
        assert_eq!(out, mixed.as_bytes());
        // Anthropic and whole answers have no such chunk.
        assert!(UsageMeter::anthropic(true, 8)
            .hiding_usage_chunk(true)
            .hide
            .is_none());
        assert!(UsageMeter::new(false, 8)
            .hiding_usage_chunk(true)
            .hide
            .is_none());
    }

    #[test]
    fn whole_events_pass_without_a_copy_and_split_ones_are_held() {
        let mut m = UsageMeter::new(true, 0).hiding_usage_chunk(true);
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
        let mut body = Some(chunk.clone());
        m.pass(&mut body, false);
        assert_eq!(body.as_ref().map(|b| b.as_ptr()), Some(chunk.as_ptr()));
        let mut body = Some(Bytes::from_static(b"data: {\"choi"));
        m.pass(&mut body, false);
        assert_eq!(body.as_deref(), Some(&b""[..]));
        let mut body = Some(Bytes::from_static(b"ces\":[]}\n\ndata: [DO"));
        m.pass(&mut body, false);
        assert_eq!(body.as_deref(), Some(&b"data: {\"choices\":[]}\n\n"[..]));
        // The end passes what is held, cut or not.
        let mut body = None;
        m.pass(&mut body, true);
        assert_eq!(body.as_deref(), Some(&b"data: [DO"[..]));
        assert!(!m.saw_done());
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
