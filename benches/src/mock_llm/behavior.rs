//! What the mock does with a request: the `Behavior` enum, its word form, and a lock-free cell.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::Format;

/// How the mock answers one request.
///
/// The word form (`normal`, `hang`, `status-503`, `stall-after-2`, `malformed`, `reset-after-1`,
/// `end-after-2`, `error-in-200`) is what the `x-mock-behavior` header, a `mock-…` model name and the binary's
/// `--behavior` flag accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// A well-formed answer, streamed when the request asks for it.
    #[default]
    Normal,
    /// Read the request body, then never answer; the connection stays open.
    Hang,
    /// Answer this status with an error body in the route's provider shape.
    Status(u16),
    /// Stream this many content chunks, then go silent with the connection open.
    StallAfter(usize),
    /// A `200 text/event-stream` whose lines are neither valid SSE events nor JSON, then close.
    Malformed,
    /// Stream this many content chunks, then drop the connection without ending the body.
    ResetAfter(usize),
    /// A `200` whose JSON body is an error object.
    ErrorIn200,
    /// Stream this many content chunks, then end the body cleanly without the stream's last
    /// events (no finish reason, `[DONE]` or `message_stop`): a provider that gave up early.
    EndAfter(usize),
}

/// The reason a word is not a behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBehavior(pub String);

impl fmt::Display for UnknownBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mock behavior {:?}: expected normal, hang, status-NNN, stall-after-N, \
             malformed, reset-after-N, end-after-N or error-in-200",
            self.0
        )
    }
}

impl std::error::Error for UnknownBehavior {}

impl FromStr for Behavior {
    type Err = UnknownBehavior;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownBehavior(word.to_owned());
        let word = word.trim();
        match word.to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "hang" => Ok(Self::Hang),
            "malformed" => Ok(Self::Malformed),
            "error-in-200" => Ok(Self::ErrorIn200),
            other => {
                if let Some(code) = other.strip_prefix("status-") {
                    let code: u16 = code.parse().map_err(|_| unknown())?;
                    // Only codes that `http::StatusCode` can carry.
                    if (100..=999).contains(&code) {
                        return Ok(Self::Status(code));
                    }
                    return Err(unknown());
                }
                if let Some(n) = other.strip_prefix("stall-after-") {
                    return n.parse().map(Self::StallAfter).map_err(|_| unknown());
                }
                if let Some(n) = other.strip_prefix("reset-after-") {
                    return n.parse().map(Self::ResetAfter).map_err(|_| unknown());
                }
                if let Some(n) = other.strip_prefix("end-after-") {
                    return n.parse().map(Self::EndAfter).map_err(|_| unknown());
                }
                Err(unknown())
            }
        }
    }
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Hang => f.write_str("hang"),
            Self::Status(code) => write!(f, "status-{code}"),
            Self::StallAfter(n) => write!(f, "stall-after-{n}"),
            Self::Malformed => f.write_str("malformed"),
            Self::ResetAfter(n) => write!(f, "reset-after-{n}"),
            Self::ErrorIn200 => f.write_str("error-in-200"),
            Self::EndAfter(n) => write!(f, "end-after-{n}"),
        }
    }
}

impl Behavior {
    /// The behaviour a model name asks for: `mock-hang`, `mock-status-500`, after a format if
    /// any (`mock-spaced-hang`). `None` for any other name, including `mock-model` and
    /// `mock-spaced`, so ordinary mock model names stay normal.
    pub fn from_model(model: &str) -> Option<Self> {
        Format::split_model(model).and_then(|(_, word)| word.parse().ok())
    }

    /// Packs the behaviour into one word: the variant in the high 32 bits, its count below.
    fn encode(self) -> u64 {
        let (tag, n): (u64, u64) = match self {
            Self::Normal => (0, 0),
            Self::Hang => (1, 0),
            Self::Status(code) => (2, u64::from(code)),
            Self::StallAfter(n) => (3, n as u64),
            Self::Malformed => (4, 0),
            Self::ResetAfter(n) => (5, n as u64),
            Self::ErrorIn200 => (6, 0),
            Self::EndAfter(n) => (7, n as u64),
        };
        (tag << 32) | (n & 0xFFFF_FFFF)
    }

    fn decode(word: u64) -> Self {
        let n = word & 0xFFFF_FFFF;
        match word >> 32 {
            1 => Self::Hang,
            2 => Self::Status(u16::try_from(n).unwrap_or(500)),
            3 => Self::StallAfter(n as usize),
            4 => Self::Malformed,
            5 => Self::ResetAfter(n as usize),
            6 => Self::ErrorIn200,
            7 => Self::EndAfter(n as usize),
            _ => Self::Normal,
        }
    }
}

/// The handle's current behaviour, read on every request without taking a lock.
///
/// Counts above `u32::MAX` chunks are clamped when stored, which no test can tell apart.
#[derive(Debug)]
pub(crate) struct BehaviorCell(AtomicU64);

impl BehaviorCell {
    pub(crate) fn new(behavior: Behavior) -> Self {
        Self(AtomicU64::new(clamp(behavior).encode()))
    }

    pub(crate) fn get(&self) -> Behavior {
        Behavior::decode(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, behavior: Behavior) {
        self.0.store(clamp(behavior).encode(), Ordering::Relaxed);
    }
}

fn clamp(behavior: Behavior) -> Behavior {
    const MAX: usize = u32::MAX as usize;
    match behavior {
        Behavior::StallAfter(n) => Behavior::StallAfter(n.min(MAX)),
        Behavior::ResetAfter(n) => Behavior::ResetAfter(n.min(MAX)),
        Behavior::EndAfter(n) => Behavior::EndAfter(n.min(MAX)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn words_round_trip() {
        for b in [
            Behavior::Normal,
            Behavior::Hang,
            Behavior::Status(503),
            Behavior::StallAfter(2),
            Behavior::Malformed,
            Behavior::ResetAfter(0),
            Behavior::ErrorIn200,
            Behavior::EndAfter(3),
        ] {
            assert_eq!(b.to_string().parse::<Behavior>().unwrap(), b);
            let cell = BehaviorCell::new(Behavior::Normal);
            cell.set(b);
            assert_eq!(cell.get(), b);
        }
    }

    #[test]
    fn bad_words_are_refused() {
        for w in [
            "",
            "status-",
            "status-99",
            "status-1000",
            "stall-after-x",
            "slow",
        ] {
            assert!(w.parse::<Behavior>().is_err(), "{w}");
        }
    }

    #[test]
    fn model_names() {
        assert_eq!(Behavior::from_model("mock-hang"), Some(Behavior::Hang));
        assert_eq!(
            Behavior::from_model("mock-status-429"),
            Some(Behavior::Status(429))
        );
        assert_eq!(
            Behavior::from_model("mock-stall-after-2"),
            Some(Behavior::StallAfter(2))
        );
        assert_eq!(
            Behavior::from_model("mock-pretty-reset-after-1"),
            Some(Behavior::ResetAfter(1))
        );
        assert_eq!(Behavior::from_model("mock-spaced"), None);
        assert_eq!(Behavior::from_model("mock-model"), None);
        assert_eq!(Behavior::from_model("gpt-4o"), None);
    }
}
