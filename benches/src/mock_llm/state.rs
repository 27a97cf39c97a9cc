//! The state every connection shares: configuration, current behaviour, counters, request log.

use tokio_util::sync::CancellationToken;

use super::answer::full_text;
use super::behavior::BehaviorCell;
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
            config,
        }
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
