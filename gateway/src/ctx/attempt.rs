//! The exchange with the provider: when the first attempt started, the answering attempt's
//! first byte, a 5xx it answered, and the deadlines that watch the current attempt. Routing
//! makes several attempts per request (`routing::plan` lists them); each starts with `next`.

use std::time::{Duration, Instant};

use crate::watchdog::Watchdog;

#[derive(Debug, Default)]
pub struct Attempt {
    started: Option<Instant>,
    ttfb: Option<Duration>,
    /// The provider answered 5xx (the client gets a 502).
    upstream_5xx: Option<u16>,
    /// The first-byte and idle deadlines, once connected.
    watchdog: Option<Watchdog>,
}

impl Attempt {
    /// An attempt starts (`upstream_peer`): the first start is kept (the request's time with
    /// the provider counts from it); what the previous attempt saw is dropped, its watchdog
    /// stopped.
    pub fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
        self.ttfb = None;
        self.upstream_5xx = None;
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.finish();
        }
    }

    /// The first byte of the current attempt's answer arrived.
    pub fn has_answer(&self) -> bool {
        self.ttfb.is_some()
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn ttfb(&self) -> Option<Duration> {
        self.ttfb
    }

    pub fn upstream_5xx(&self) -> Option<u16> {
        self.upstream_5xx
    }

    /// The request is about to go out on a connection: its deadlines start. A retry on another
    /// connection replaces (and so stops) the previous watchdog.
    pub fn connected(&mut self, watchdog: Option<Watchdog>) {
        self.watchdog = watchdog;
    }

    /// The answer's header arrived with `status`.
    pub fn answered(&mut self, status: u16) {
        self.progress();
        if self.ttfb.is_none() {
            self.ttfb = self.started.map(|at| at.elapsed());
        }
        if status >= 500 {
            self.upstream_5xx = Some(status);
        }
    }

    /// A chunk of the answer arrived: the idle deadline restarts.
    pub fn progress(&self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.progress();
        }
    }

    /// The answer ended (or the request did): the watch stops, before pingora may pool the
    /// connection.
    pub fn finish(&self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.finish();
        }
    }

    /// Whether a deadline cut the exchange.
    pub fn timed_out(&self) -> bool {
        self.watchdog.as_ref().is_some_and(Watchdog::fired)
    }
}
