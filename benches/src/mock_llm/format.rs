//! The layout the mock writes its JSON and events in: compact, as OpenAI and Anthropic send
//! them, or one of the valid variants other servers send (Python ones among them), so that
//! tests cover readers that must take any valid JSON and any valid server-sent events.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;

/// How the answer's bytes are laid out; the content is the same in every format.
///
/// The word form (`compact`, `spaced`, `pretty`, `crlf`) is what the `x-mock-format` header
/// takes, and what a model name `mock-<format>` or `mock-<format>-<behaviour>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// No whitespace in JSON, `\n` line ends.
    #[default]
    Compact,
    /// A space after every colon and comma of the JSON (`"usage": {`).
    Spaced,
    /// Pretty-printed JSON over several lines, two spaces per level: a stream event's data
    /// goes out as one `data:` line per JSON line, after a comment line (`: pretty`).
    Pretty,
    /// `\r\n` line ends: the stream's lines (each event after a `: ping` comment), and a whole
    /// answer's pretty-printed JSON.
    Crlf,
}

impl Format {
    const ALL: [Self; 4] = [Self::Compact, Self::Spaced, Self::Pretty, Self::Crlf];

    fn word(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Spaced => "spaced",
            Self::Pretty => "pretty",
            Self::Crlf => "crlf",
        }
    }

    /// Splits a model name's word into its format and the rest: `mock-spaced-reset-after-2`
    /// gives `(Some(Spaced), "reset-after-2")`; a name that is not `mock-…` gives `None`.
    pub(crate) fn split_model(model: &str) -> Option<(Option<Self>, &str)> {
        let word = model.strip_prefix("mock-")?;
        for format in Self::ALL {
            if let Some(rest) = word.strip_prefix(format.word()) {
                if rest.is_empty() {
                    return Some((Some(format), ""));
                }
                if let Some(rest) = rest.strip_prefix('-') {
                    return Some((Some(format), rest));
                }
            }
        }
        Some((None, word))
    }

    /// The format a model name asks for: `mock-pretty`, `mock-crlf-stall-after-1`, …
    pub fn from_model(model: &str) -> Option<Self> {
        Self::split_model(model).and_then(|(format, _)| format)
    }

    /// A whole JSON answer (given compact) in this format.
    pub fn json(self, compact: Bytes) -> Bytes {
        match self {
            Self::Compact => compact,
            Self::Spaced => Bytes::from(relayout(&compact, Layout::Spaced)),
            Self::Pretty => Bytes::from(relayout(&compact, Layout::Pretty)),
            Self::Crlf => {
                let pretty = relayout(&compact, Layout::Pretty);
                Bytes::from(crlf(&pretty))
            }
        }
    }

    /// One stream event (given as `field: value` lines ending in `\n`, the data compact JSON)
    /// in this format. Lines that are not JSON data pass as they are, so a malformed stream
    /// stays malformed.
    pub fn event(self, compact: Bytes) -> Bytes {
        let layout = match self {
            Self::Compact => return compact,
            Self::Crlf => return Bytes::from(crlf(&[b": ping\n", &compact[..]].concat())),
            Self::Spaced => Layout::Spaced,
            Self::Pretty => Layout::Pretty,
        };
        let mut out = Vec::with_capacity(compact.len() * 2);
        if self == Self::Pretty {
            out.extend_from_slice(b": pretty\n");
        }
        for line in compact.split_inclusive(|b| *b == b'\n') {
            let json = line.strip_prefix(b"data: ").filter(|d| d.starts_with(b"{"));
            let Some(json) = json else {
                out.extend_from_slice(line);
                continue;
            };
            let (json, end) = match json.strip_suffix(b"\n") {
                Some(j) => (j, &b"\n"[..]),
                None => (json, &b""[..]),
            };
            for (i, piece) in relayout(json, layout).split(|b| *b == b'\n').enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(piece);
            }
            out.extend_from_slice(end);
        }
        Bytes::from(out)
    }

    pub(crate) fn encode(self) -> u8 {
        match self {
            Self::Compact => 0,
            Self::Spaced => 1,
            Self::Pretty => 2,
            Self::Crlf => 3,
        }
    }

    fn decode(n: u8) -> Self {
        match n {
            1 => Self::Spaced,
            2 => Self::Pretty,
            3 => Self::Crlf,
            _ => Self::Compact,
        }
    }
}

/// The reason a word is not a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mock format {:?}: expected compact, spaced, pretty or crlf",
            self.0
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        let lower = word.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|f| f.word() == lower)
            .ok_or_else(|| UnknownFormat(word.to_owned()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// The handle's current format, read on every request without taking a lock.
#[derive(Debug)]
pub(crate) struct FormatCell(AtomicU8);

impl FormatCell {
    pub(crate) fn new(format: Format) -> Self {
        Self(AtomicU8::new(format.encode()))
    }

    pub(crate) fn get(&self) -> Format {
        Format::decode(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, format: Format) {
        self.0.store(format.encode(), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Spaced,
    Pretty,
}

/// Compact JSON laid out again, byte by byte outside strings (so key order and numbers stay
/// as they were). Bytes that are not JSON come out laid out all the same, never refused.
fn relayout(json: &[u8], layout: Layout) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    };
    let (mut in_string, mut escaped, mut depth) = (false, false, 0usize);
    let mut bytes = json.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match (b, layout) {
            (b'"', _) => {
                in_string = true;
                out.push(b);
            }
            (b':', _) => out.extend_from_slice(b": "),
            (b',', Layout::Spaced) => out.extend_from_slice(b", "),
            (b',', Layout::Pretty) => {
                out.push(b',');
                newline(&mut out, depth);
            }
            (b'{' | b'[', Layout::Pretty) => {
                out.push(b);
                let close = if b == b'{' { b'}' } else { b']' };
                if bytes.peek() == Some(&close) {
                    // An empty object or array stays on its line.
                    out.push(close);
                    bytes.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            (b'}' | b']', Layout::Pretty) => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Every `\n` as `\r\n`.
fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for &b in text {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BODY: &str = r#"{"a":"x:\"y\",z","b":[1,{}],"usage":{"p":1},"c":[]}"#;

    #[test]
    fn layouts_keep_the_json_and_change_only_whitespace() {
        let value: serde_json::Value = serde_json::from_str(BODY).unwrap();
        let spaced = Format::Spaced.json(Bytes::from_static(BODY.as_bytes()));
        assert_eq!(
            std::str::from_utf8(&spaced).unwrap(),
            r#"{"a": "x:\"y\",z", "b": [1, {}], "usage": {"p": 1}, "c": []}"#
        );
        let pretty = Format::Pretty.json(Bytes::from_static(BODY.as_bytes()));
        assert_eq!(
            std::str::from_utf8(&pretty).unwrap(),
            "{\n  \"a\": \"x:\\\"y\\\",z\",\n  \"b\": [\n    1,\n    {}\n  ],\n  \"usage\": {\n    \"p\": 1\n  },\n  \"c\": []\n}"
        );
        let crlf = Format::Crlf.json(Bytes::from_static(BODY.as_bytes()));
        assert!(crlf.windows(2).any(|w| w == b"\r\n"));
        for body in [spaced, pretty, crlf] {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v, value);
        }
    }

    #[test]
    fn events_keep_their_fields_and_data() {
        let event = Bytes::from_static(b"event: x\ndata: {\"k\":[1,2]}\n\n");
        assert_eq!(
            Format::Spaced.event(event.clone()),
            "event: x\ndata: {\"k\": [1, 2]}\n\n"
        );
        assert_eq!(
            Format::Pretty.event(event.clone()),
            ": pretty\nevent: x\ndata: {\ndata:   \"k\": [\ndata:     1,\ndata:     2\ndata:   ]\ndata: }\n\n"
        );
        assert_eq!(
            Format::Crlf.event(event.clone()),
            ": ping\r\nevent: x\r\ndata: {\"k\":[1,2]}\r\n\r\n"
        );
        assert_eq!(Format::Compact.event(event.clone()), event);
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        assert_eq!(
            Format::Pretty.event(done.clone()),
            ": pretty\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn words_and_model_names() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
            let cell = FormatCell::new(Format::Compact);
            cell.set(f);
            assert_eq!(cell.get(), f);
        }
        assert!("tabs".parse::<Format>().is_err());
        assert_eq!(Format::from_model("mock-spaced"), Some(Format::Spaced));
        assert_eq!(
            Format::split_model("mock-crlf-reset-after-2"),
            Some((Some(Format::Crlf), "reset-after-2"))
        );
        assert_eq!(Format::split_model("mock-hang"), Some((None, "hang")));
        assert_eq!(Format::from_model("mock-prettyish"), None);
        assert_eq!(Format::split_model("gpt-4o"), None);
    }
}
