//! A server-sent-events decoder fed bytes in arbitrary splits: it keeps at most one unfinished
//! event (bounded) and hands out each event as soon as its closing blank line is in.

use memchr::memchr;

/// One complete event: its `event:` name (empty if none) and its `data:` lines joined by `\n`.
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: Vec<u8>,
}

/// The unfinished event grew past the cap without ending.
#[derive(Debug)]
pub(crate) struct Overflow;

#[derive(Debug)]
pub(crate) struct SseDecoder {
    /// The start of a line whose `\n` has not arrived yet.
    line: Vec<u8>,
    event: String,
    data: Vec<u8>,
    has_data: bool,
    cap: usize,
}

impl SseDecoder {
    pub fn new(cap: usize) -> Self {
        Self {
            line: Vec::new(),
            event: String::new(),
            data: Vec::new(),
            has_data: false,
            cap,
        }
    }

    /// Consumes `input` up to the end of the next complete event and returns it; `None` once
    /// `input` is used up (its tail kept for the next call).
    pub fn next_event(&mut self, input: &mut &[u8]) -> Result<Option<SseEvent>, Overflow> {
        while let Some(pos) = memchr(b'\n', input) {
            let (head, rest) = input.split_at(pos);
            *input = &rest[1..];
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
            if let Some(ev) = dispatched {
                return Ok(Some(ev));
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
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut input: &[u8] = b"\n\n";
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if let Some(ev) = self.line_done(&line) {
                return Some(ev);
            }
        }
        self.next_event(&mut input).ok().flatten()
    }

    fn overflow(&mut self) -> Overflow {
        *self = Self::new(self.cap);
        Overflow
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if !self.has_data && self.event.is_empty() {
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
            });
        }
        let (field, value) = match memchr(b':', line) {
            Some(0) => return None, // A comment.
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
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            _ => {} // id, retry and unknown fields mean nothing here.
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn all(dec: &mut SseDecoder, mut input: &[u8]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while let Some(ev) = dec.next_event(&mut input).unwrap() {
            v.push((ev.event, String::from_utf8(ev.data).unwrap()));
        }
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
    fn overflow_is_reported_and_resets() {
        let mut d = SseDecoder::new(16);
        let mut input: &[u8] = b"data: 0123456789abcdef";
        assert!(d.next_event(&mut input).is_err());
        assert_eq!(all(&mut d, b"data: ok\n\n"), vec![("".into(), "ok".into())]);
    }
}
