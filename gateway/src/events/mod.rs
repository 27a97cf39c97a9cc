//! The event publisher: hands every request's event to RabbitMQ in the background, so no
//! request ever waits on the broker, and keeps events on local disk while the broker is away.
//!
//! ```text
//! publish() ──try_send──▶ bounded channel ──▶ publisher task ──batch, pipelined──▶ wrapx.events
//!     │ full/closed                               │ broker down, nack, unroutable, timeout
//!     └──────────────▶ spool (segment files) ◀────┘
//!                          └──── replayed in order, oldest segment first, once connected ───▶
//! ```
//!
//! Events are packed up to 64 to a message (one JSON line each, content type
//! `application/x-ndjson`, one routing key per message): the broker's work is per message and
//! per queue, and one message per request made RabbitMQ the busiest process on the machine.
//! Every message is persistent and mandatory, published on a confirm channel with an id of its
//! own as `message_id`, and its events count as delivered only when the broker acks it *and*
//! routed it to a queue; each publish has a deadline (`amqp.publish_timeout_ms`: a broker
//! under a memory alarm blocks publishers). The task runs its own reconnect loop with backoff
//! and declares the topology on every connect; lapin's recovery is not used.
//!
//! # The guarantee
//!
//! - **None lost** while the process runs or stops cleanly: an event is, at every moment, in
//!   the channel, in a publish awaiting its confirm, or in a spool segment; it leaves the
//!   gateway's hands only with a positive, routed confirm. A segment is deleted only after
//!   each of its events was confirmed or re-written (and fsync'd) into a newer segment. Spool
//!   writes reach the kernel at once and are fsync'd every 100 ms, so a machine crash can lose
//!   the last 100 ms of spooled events. The one deliberate loss: when the spool is full
//!   (`gateway.spool_max_bytes`), new events are dropped, counted in
//!   `wrapx_gateway_events_dropped_total`, and logged.
//! - **None doubled by the gateway**, except where the gateway cannot know: when a publish's
//!   confirm does not arrive (deadline passed, connection lost) the broker may or may not hold
//!   the message, and the gateway publishes it again later; and after a crash of the process
//!   in the moment between a replayed chunk's confirms and the write of its replay offset.
//!   Every copy of an event carries the same `request_id`; the worker deduplicates on it.
//! - **Order**: spooled events are replayed in the order they were spooled (an event whose
//!   replay fails moves behind the backlog); live events are not held back behind the backlog.

mod broker;
mod pump;
mod spool;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wrapx_core::{config::Settings, events::Event};

use self::{broker::Outgoing, pump::Pump, spool::Spool};

/// Events waiting on local disk for the broker.
pub const SPOOLED_GAUGE: &str = "wrapx_gateway_events_spooled";
/// Events given up: the spool was full or could not be written.
pub const DROPPED_COUNTER: &str = "wrapx_gateway_events_dropped_total";
/// Publishes the broker returned because no queue was bound for their routing key.
pub const UNROUTABLE_COUNTER: &str = "wrapx_gateway_events_unroutable_total";

/// Events held in memory between `publish` and the task; past it, `publish` spools directly.
/// Events carry trimmed request and response data, so this bounds memory to some hundred MB
/// in the worst case.
const CHANNEL_CAPACITY: usize = 8192;

/// The handle the request path uses. Cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

/// The background task; [`PublisherTask::join`] waits for it to drain after shutdown.
pub struct PublisherTask {
    handle: tokio::task::JoinHandle<()>,
}

/// Counters since start, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherStats {
    /// Acked by the broker and routed to at least one queue.
    pub confirmed: u64,
    /// Returned by the broker as unroutable (then spooled, not counted as delivered).
    pub unroutable: u64,
    /// On disk now, waiting for the broker.
    pub spooled: u64,
    /// Given up (spool full or unwritable, or an unreadable spool line).
    pub dropped: u64,
}

impl EventPublisher {
    /// Opens the spool (replaying what a previous run left once the broker is reachable) and
    /// starts the task. Never fails because the broker is down: the task connects (and
    /// reconnects) in the background. Fails only when the spool directory is unusable.
    pub async fn start(
        settings: &Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(EventPublisher, PublisherTask)> {
        let dir = PathBuf::from(&settings.gateway.spool_dir);
        let max_bytes = settings.gateway.spool_max_bytes;
        let open_dir = dir.clone();
        let (spool, pending) =
            tokio::task::spawn_blocking(move || Spool::open(&open_dir, max_bytes))
                .await
                .context("opening the event spool")?
                .with_context(|| format!("opening the event spool in {}", dir.display()))?;
        if pending > 0 {
            tracing::info!(
                events = pending,
                "events left in the spool by an earlier run will be replayed"
            );
        }
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            connected: AtomicBool::new(false),
            spooled: AtomicU64::new(pending),
            confirmed: AtomicU64::new(0),
            unroutable: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
        });
        shared.update_gauge();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let pump = Pump::new(
            rx,
            Arc::clone(&shared),
            shutdown,
            settings.amqp.url.clone(),
            settings.amqp.webhook_retry_delays_ms.clone(),
            Duration::from_millis(settings.amqp.publish_timeout_ms),
            Duration::from_millis(settings.gateway.shutdown_grace_ms),
        );
        // Not detached: PublisherTask::join awaits it.
        let handle = tokio::spawn(pump.run());
        Ok((EventPublisher { tx, shared }, PublisherTask { handle }))
    }

    /// Never blocks or awaits: serializes the event and hands it to the task; when the task's
    /// channel is full (or the task has stopped) the event is appended to the spool at once.
    pub fn publish(&self, event: Event) {
        let body = match event.to_json() {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(event_id = %event.id(), %error, "an event could not be serialized; dropped");
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(DROPPED_COUNTER).increment(1);
                return;
            }
        };
        let message = Outgoing {
            routing_key: event.routing_key(),
            body,
        };
        if let Err(refused) = self.tx.try_send(message) {
            let message = refused.into_inner();
            self.shared.spool_new([message.body.as_slice()]);
        }
    }

    /// Whether a broker session is up (for `/readyz`).
    pub fn broker_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Events on disk waiting for the broker.
    pub fn spooled(&self) -> u64 {
        self.shared.spooled.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> PublisherStats {
        let s = &self.shared;
        PublisherStats {
            confirmed: s.confirmed.load(Ordering::Relaxed),
            unroutable: s.unroutable.load(Ordering::Relaxed),
            spooled: s.spooled.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }
}

impl PublisherTask {
    /// After the shutdown token is cancelled: publishes what is still in memory (within the
    /// shutdown grace period), spools the rest, fsyncs the spool, then returns. Events
    /// published after this go straight to the spool.
    pub async fn join(self) {
        if let Err(error) = self.handle.await {
            tracing::error!(%error, "the event publisher task failed");
        }
    }
}

/// What the handles and the task share.
struct Shared {
    spool: Mutex<Spool>,
    connected: AtomicBool,
    spooled: AtomicU64,
    confirmed: AtomicU64,
    unroutable: AtomicU64,
    dropped: AtomicU64,
    /// Set while events are being dropped, so the error is logged once per episode.
    dropping: AtomicBool,
}

impl Shared {
    fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock cannot leave the spool worse than a torn line, which
        // the replayer skips: keep using it.
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spools events not yet on disk, within the size bound.
    fn spool_new<'a>(&self, lines: impl IntoIterator<Item = &'a [u8]>) {
        let lines: Vec<&[u8]> = lines.into_iter().collect();
        let written = self.write(&lines, true);
        self.spooled.fetch_add(written as u64, Ordering::Relaxed);
        self.account_drops(lines.len() - written);
    }

    /// Moves events read from an older segment into the active one (they stay counted).
    fn spool_moved<'a>(&self, lines: impl IntoIterator<Item = &'a [u8]>) {
        let lines: Vec<&[u8]> = lines.into_iter().collect();
        let written = self.write(&lines, false);
        let lost = lines.len() - written;
        self.spooled.fetch_sub(lost as u64, Ordering::Relaxed);
        self.account_drops(lost);
    }

    fn write(&self, lines: &[&[u8]], enforce_cap: bool) -> usize {
        if lines.is_empty() {
            return 0;
        }
        match self.spool().append(lines.iter().copied(), enforce_cap) {
            Ok(written) => written,
            Err(error) => {
                tracing::error!(%error, "the event spool could not be written");
                0
            }
        }
    }

    fn account_drops(&self, dropped: usize) {
        if dropped == 0 {
            if self.dropping.load(Ordering::Relaxed) {
                self.dropping.store(false, Ordering::Relaxed);
            }
        } else {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            ::metrics::counter!(DROPPED_COUNTER).increment(dropped as u64);
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    dropped,
                    "the event spool is full or unwritable: events are being dropped"
                );
            }
        }
        self.update_gauge();
    }

    fn update_gauge(&self) {
        ::metrics::gauge!(SPOOLED_GAUGE).set(self.spooled.load(Ordering::Relaxed) as f64);
    }
}
