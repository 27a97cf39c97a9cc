//! A server-sent-events reader fed bytes in arbitrary splits, as the SSE spec reads a stream:
//! lines end in CRLF, LF or CR; a blank line ends an event; the `data:` lines of one event are
//! joined by `\n`; one space after the field's colon is dropped; a line starting with `:` is a
//! comment. It keeps at most one unfinished event (bounded) in buffers it reuses, so reading
//! allocates nothing once they have grown to the stream's largest event.

use memchr::{memchr, memchr2};

/// One complete event, borrowed from the scanner until its next call: its `event:` name (empty
/// if none) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SseRef<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

/// One complete event, owned (for the translators, which build JSON from it anyway).
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: Vec<u8>,
}

/// The unfinished event grew past the cap without ending.
#[derive(Debug)]
pub(crate) struct Overflow;

/// The event boundaries and fields of a stream, found with `memchr` over the bytes.
#[derive(Debug)]
pub(crate) struct SseScanner {
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The last line ended in a CR at the end of an input: an LF first in the next input is
    /// that CR's pair, not a blank line.
    after_cr: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// `event` and `data` still hold the event last handed out; cleared on the next call.
    dispatched: bool,
    cap: usize,
}

impl SseScanner {
    pub fn new(cap: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            event: Vec::new(),
            data: Vec::new(),
            has_data: false,
            dispatched: false,
            cap,
        }
    }

    /// Consumes `input` up to the end of the next complete event and returns it; `None` once
    /// `input` is used up (its tail kept for the next call). After an `Overflow` the scanner
    /// starts afresh with what follows in `input`.
    pub fn next<'s>(&'s mut self, input: &mut &[u8]) -> Result<Option<SseRef<'s>>, Overflow> {
        self.clear_dispatched();
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                *input = &input[1..];
            }
        }
        while let Some(pos) = memchr2(b'\n', b'\r', input) {
            let (head, rest) = input.split_at(pos);
            *input = &rest[1..];
            if rest[0] == b'\r' {
                match input.first() {
                    Some(b'\n') => *input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let dispatched = if self.line.is_empty() {
                self.line_done(head)
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let d = self.line_done(&line);
                line.clear();
                // Keep the capacity: the next split line reuses it.
                self.line = line;
                d
            };
            if dispatched {
                return Ok(Some(self.current()));
            }
            if self.data.len() > self.cap {
                return Err(self.overflow());
            }
        }
        self.line.extend_from_slice(input);
        *input = &[];
        if self.line.len() + self.data.len() > self.cap {
            return Err(self.overflow());
        }
        Ok(None)
    }

    /// Ends the stream: a last event missing its blank line still counts.
    pub fn finish(&mut self) -> Option<SseRef<'_>> {
        self.clear_dispatched();
        self.after_cr = false;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let done = self.line_done(&line);
            if done {
                return Some(self.current());
            }
        }
        if self.line_done(b"") {
            return Some(self.current());
        }
        None
    }

    /// Whether the input so far ended in a CR whose LF may open the next input.
    pub fn after_cr(&self) -> bool {
        self.after_cr
    }

    fn current(&self) -> SseRef<'_> {
        SseRef {
            event: &self.event,
            data: &self.data,
        }
    }

    fn clear_dispatched(&mut self) {
        if self.dispatched {
            self.dispatched = false;
            self.event.clear();
            self.data.clear();
        }
    }

    fn overflow(&mut self) -> Overflow {
        *self = Self::new(self.cap);
        Overflow
    }

    /// Takes one line (without its end); true when it ended an event that has data.
    fn line_done(&mut self, line: &[u8]) -> bool {
        if line.is_empty() {
            if !self.has_data {
                // Nothing to hand out: the spec drops a lone `event:` name too.
                self.event.clear();
                return false;
            }
            self.has_data = false;
            self.dispatched = true;
            return true;
        }
        let (field, value) = match memchr(b':', line) {
            Some(0) => return false, // A comment (`: ping`).
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {} // id, retry and unknown fields mean nothing here.
        }
        false
    }
}

/// [`SseScanner`] handing out owned events.
#[derive(Debug)]
pub(crate) struct SseDecoder(SseScanner);

impl SseDecoder {
    pub fn new(cap: usize) -> Self {
        Self(SseScanner::new(cap))
    }

    /// As [`SseScanner::next`], the event owned.
    pub fn next_event(&mut self, input: &mut &[u8]) -> Result<Option<SseEvent>, Overflow> {
        Ok(self.0.next(input)?.map(SseEvent::from))
    }

    /// As [`SseScanner::finish`], the event owned.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.0.finish().map(SseEvent::from)
    }
}

impl From<SseRef<'_>> for SseEvent {
    fn from(e: SseRef<'_>) -> Self {
        Self {
            event: String::from_utf8_lossy(e.event).into_owned(),
            data: e.data.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use proptest::prelude::*;

    use super::*;

    fn all(dec: &mut SseDecoder, mut input: &[u8]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while let Some(ev) = dec.next_event(&mut input).unwrap() {
            v.push((ev.event, String::from_utf8(ev.data).unwrap()));
        }
        v
    }

    /// Every event of `input` fed in the given pieces, then finished.
    fn split(input: &[u8], cuts: &[usize]) -> Vec<(String, String)> {
        let mut d = SseDecoder::new(1 << 20);
        let mut v = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            let cut = cut.clamp(from, input.len());
            v.extend(all(&mut d, &input[from..cut]));
            from = cut;
        }
        v.extend(
            d.finish()
                .map(|e| (e.event, String::from_utf8(e.data).unwrap())),
        );
        v
    }

    #[test]
    fn events_lines_and_comments() {
        let mut d = SseDecoder::new(1 << 20);
        let got = all(
            &mut d,
            b": hi\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\n\n\ndata: x\n\nid: 3\nevent: b\ndata",
        );
        assert_eq!(
            got,
            vec![("a".into(), "1\n2".into()), ("".into(), "x".into())]
        );
        let last = d.finish().unwrap();
        assert_eq!((last.event.as_str(), last.data.as_slice()), ("b", &b""[..]));
        assert!(d.finish().is_none());
    }

    #[test]
    fn every_line_ending_and_the_spec_details() {
        // `data:   "x"` keeps two of its three spaces: only one after the colon is dropped.
        let expected = vec![
            ("a".to_owned(), "{\n  \"x\": 1\n}".to_owned()),
            ("".to_owned(), " two spaces, one kept".to_owned()),
            ("".to_owned(), "é€😀".to_owned()),
        ];
        let lf = "event: a\ndata: {\ndata:   \"x\": 1\ndata: }\n\n: ping\n\nevent: lone\n\ndata:  two spaces, one kept\n\ndata: é€😀\n\n";
        for text in [
            lf.to_owned(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            let bytes = text.as_bytes();
            assert_eq!(split(bytes, &[]), expected, "{text:?}");
            // Every single split point, including inside CRLF pairs and multi-byte characters.
            for cut in 0..=bytes.len() {
                assert_eq!(split(bytes, &[cut]), expected, "cut {cut} of {text:?}");
            }
        }
    }

    #[test]
    fn overflow_is_reported_and_resets() {
        let mut d = SseDecoder::new(16);
        let mut input: &[u8] = b"data: 0123456789abcdef";
        assert!(d.next_event(&mut input).is_err());
        assert_eq!(all(&mut d, b"data: ok\n\n"), vec![("".into(), "ok".into())]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_splits_read_the_same(
            cuts in prop::collection::vec(0usize..200, 0..8),
            ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        ) {
            let text = "event: message_start\ndata: {\"a\": 1,\ndata:  \"b\": \"ü\"}\n\n: ping\n\ndata: [DONE]\n\n"
                .replace('\n', ending);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let got = split(text.as_bytes(), &cuts);
            prop_assert_eq!(got, vec![
                ("message_start".to_owned(), "{\"a\": 1,\n \"b\": \"ü\"}".to_owned()),
                ("".to_owned(), "[DONE]".to_owned()),
            ]);
        }
    }
}
