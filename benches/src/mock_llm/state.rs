//! The state every connection shares: configuration, current behaviour, counters, request log.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::answer::full_text;
use super::behavior::{Behavior, BehaviorCell};
use super::format::FormatCell;
use super::record::{Counters, Recorder};
use super::MockConfig;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    /// Starts as `config.mode_default`; `MockHandle::set_behavior` replaces it.
    pub(crate) behavior: BehaviorCell,
    /// Starts as `config.format_default`; `MockHandle::set_format` replaces it.
    pub(crate) format: FormatCell,
    pub(crate) counters: Counters,
    pub(crate) recorder: Recorder,
    /// Cancelled once, on shutdown: stops the accept loop, drains connections, ends hangs.
    pub(crate) shutdown: CancellationToken,
    /// The answer text for `config.chunks` chunks, built once.
    pub(crate) default_text: String,
    /// `MockHandle::fail_next`: this many chat or messages requests still get this behaviour,
    /// whatever they ask for.
    pub(crate) scripted: Mutex<Option<(usize, Behavior)>>,
    /// `MockHandle::set_retry_after`: the `retry-after` of error answers (`None`: the default,
    /// `1` on a 429 only; `Some(None)`: never one).
    pub(crate) retry_after: Mutex<Option<Option<String>>>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Self {
            behavior: BehaviorCell::new(config.mode_default),
            format: FormatCell::new(config.format_default),
            counters: Counters::default(),
            recorder: Recorder::default(),
            shutdown: CancellationToken::new(),
            default_text: full_text(config.chunks),
            scripted: Mutex::new(None),
            retry_after: Mutex::new(None),
            config,
        }
    }

    /// The scripted behaviour for this request, if `fail_next` has some left.
    pub(crate) fn take_scripted(&self) -> Option<Behavior> {
        let mut scripted = self.scripted.lock().unwrap_or_else(|e| e.into_inner());
        let (left, behavior) = scripted.as_mut()?;
        let behavior = *behavior;
        *left -= 1;
        if *left == 0 {
            *scripted = None;
        }
        Some(behavior)
    }

    /// The joined text of `chunks` chunks, reusing the prebuilt one when it fits.
    pub(crate) fn text(&self, chunks: usize) -> std::borrow::Cow<'_, str> {
        if chunks == self.config.chunks {
            std::borrow::Cow::Borrowed(&self.default_text)
        } else {
            std::borrow::Cow::Owned(full_text(chunks))
        }
    }
}
