//! Response bodies: a whole body sent at once, or a paced script whose every event leaves as
//! its own HTTP chunk when its time comes; its guard counts streams the client hung up on.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::record::StreamEnd;
use super::state::Shared;

/// The body of every response the mock sends.
#[derive(Debug)]
pub(crate) enum MockBody {
    /// Sent with a `content-length`, in one piece.
    Full(Option<Bytes>),
    /// Sent chunked, event by event.
    Script(Box<ScriptBody>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

/// What a script does once its events run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// End the body normally.
    Finish,
    /// Send nothing more and never end, until the client leaves or the mock shuts down.
    Stall,
    /// Fail the body, which makes hyper drop the connection without the final chunk.
    Reset,
}

/// A paced body: each event has a due time measured from when the body was built.
pub(crate) struct ScriptBody {
    events: VecDeque<(Duration, Bytes)>,
    ending: Ending,
    start: Instant,
    /// Armed only while waiting for an event that is not yet due.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Resolves when the mock shuts down; a stall ends then.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Present for streaming answers, which the stats count.
    guard: Option<StreamGuard>,
    /// A reset first yields once, so hyper flushes the events already written.
    reset_yielded: bool,
}

impl std::fmt::Debug for ScriptBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptBody")
            .field("events_left", &self.events.len())
            .field("ending", &self.ending)
            .finish_non_exhaustive()
    }
}

impl ScriptBody {
    /// `events` are `(due after start, bytes)`, in order. `counted` marks a streaming answer,
    /// which the stats follow.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        events: VecDeque<(Duration, Bytes)>,
        ending: Ending,
        counted: bool,
    ) -> Self {
        let shutdown =
            (ending == Ending::Stall).then(|| Box::pin(shared.shutdown.clone().cancelled_owned()));
        let guard = counted.then(|| StreamGuard::start(Arc::clone(shared)));
        Self {
            events,
            ending,
            start: Instant::now(),
            sleep: None,
            shutdown,
            guard,
            reset_yielded: false,
        }
    }

    fn end_as(&mut self, end: StreamEnd) {
        if let Some(guard) = &mut self.guard {
            guard.end = Some(end);
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Script(script) => script.poll_event(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Script(script) => script.events.is_empty() && script.ending == Ending::Finish,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Script(_) => SizeHint::default(),
        }
    }
}

impl ScriptBody {
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(&(due, _)) = self.events.front() {
            let deadline = self.start + due;
            if !due.is_zero() && deadline > Instant::now() {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                ready!(sleep.as_mut().poll(cx));
            }
            let Some((_, bytes)) = self.events.pop_front() else {
                return Poll::Ready(None);
            };
            // The last event of a finishing script completes the stream as it is handed over:
            // hyper may drop the body without polling it again.
            if self.events.is_empty() && self.ending == Ending::Finish {
                self.end_as(StreamEnd::Completed);
            }
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        match self.ending {
            Ending::Finish => {
                self.end_as(StreamEnd::Completed);
                Poll::Ready(None)
            }
            Ending::Reset => {
                // hyper returns at once on a body error, skipping the flush of what it has
                // buffered; pending once lets it flush the events before the cut.
                if !self.reset_yielded {
                    self.reset_yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.end_as(StreamEnd::Aborted);
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "mock reset",
                ))))
            }
            Ending::Stall => {
                if let Some(shutdown) = &mut self.shutdown {
                    ready!(shutdown.as_mut().poll(cx));
                }
                self.end_as(StreamEnd::Aborted);
                Poll::Ready(Some(Err(io::Error::other("mock shutting down"))))
            }
        }
    }
}

/// Counts a stream as started when built and as completed, aborted or cancelled when dropped.
/// Dropped without an ending means hyper gave up on the body: the client went away.
struct StreamGuard {
    shared: Arc<Shared>,
    end: Option<StreamEnd>,
}

impl StreamGuard {
    fn start(shared: Arc<Shared>) -> Self {
        shared.counters.stream_started();
        Self { shared, end: None }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let end = self.end.unwrap_or(StreamEnd::Cancelled);
        self.shared.counters.stream_ended(end);
    }
}

/// Lays a script out in time: the head and the first content event at `first_byte_delay`,
/// content event `i` at `first_byte_delay + i × interval`, the tail right after the last
/// content event. `cut` keeps only the head and that many content events (stall, reset, end).
pub(crate) fn pace(
    script: super::answer::StreamScript,
    first_byte_delay: Duration,
    interval: Duration,
    cut: Option<usize>,
) -> VecDeque<(Duration, Bytes)> {
    let super::answer::StreamScript {
        head,
        mut content,
        tail,
    } = script;
    let tail = match cut {
        Some(n) => {
            content.truncate(n);
            Vec::new()
        }
        None => tail,
    };
    let mut events = VecDeque::with_capacity(head.len() + content.len() + tail.len());
    events.extend(head.into_iter().map(|b| (first_byte_delay, b)));
    let mut last = first_byte_delay;
    for (i, b) in content.into_iter().enumerate() {
        last = first_byte_delay + interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        events.push_back((last, b));
    }
    events.extend(tail.into_iter().map(|b| (last, b)));
    events
}
