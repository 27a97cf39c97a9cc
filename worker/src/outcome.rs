//! What a handler decided about a message, and which deliveries the decision covers; a pure
//! type that `consumer::settle` turns into an AMQP acknowledgement and `metrics` counts.

/// A handler's verdict on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are committed (or it needs none): ack.
    Done,
    /// It could not be handled now but may be later: nack with requeue.
    Retry,
    /// It can never be handled (bad JSON, unknown schema, retries exhausted): nack without
    /// requeue, so the queue's dead-letter exchange moves it to `wrapx.dead` with its x-death
    /// record for an operator to look at.
    DeadLetter,
}

impl Outcome {
    /// The `outcome` label of `wrapx_worker_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry => "retry",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// Which deliveries a settlement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The one delivery with this tag.
    One(u64),
    /// The one delivery with this tag, which carried `count` events (a packed message).
    Packed { tag: u64, count: u64 },
    /// Every unsettled delivery of the channel up to and including this tag (a batch), and
    /// how many messages that is, for the metrics.
    UpTo { tag: u64, count: u64 },
}
