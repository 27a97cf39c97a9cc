//! The publisher task: takes batches from the channel and publishes them, keeps one broker
//! session alive (its own reconnect loop with backoff), replays the spool while connected,
//! fsyncs the spool every tick, and drains everything on shutdown.

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures::future::OptionFuture;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use wrapx_core::{backoff::Backoff, events::Event, secret::Secret};

use super::{
    broker::{Broker, Outcome, Outgoing, PACK_EVENTS},
    spool::SegmentReader,
    Shared, UNROUTABLE_COUNTER,
};

/// Events per publish batch, from the channel or from the spool.
const BATCH: usize = 1024;
/// How long a batch may wait to fill a message ([`Pump::linger`]).
const LINGER: Duration = Duration::from_millis(5);
/// Between fsyncs of the spool and checks of the broker session.
const TICK: Duration = Duration::from_millis(100);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const REPLAY_RETRY_MIN: Duration = Duration::from_millis(500);
const REPLAY_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often to look for spooled events when there seemed to be none to read.
const REPLAY_IDLE: Duration = Duration::from_millis(250);

type Connecting = Pin<Box<dyn Future<Output = anyhow::Result<Broker>> + Send>>;

pub(super) struct Pump {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    url: Secret,
    retry_delays_ms: Vec<u64>,
    publish_timeout: Duration,
    /// The bound on the final flush after shutdown.
    grace: Duration,
    broker: Option<Broker>,
    reconnect_at: Instant,
    reconnect_backoff: Backoff,
    /// The segment being replayed, when one is.
    replay: Option<SegmentReader>,
    replay_at: Instant,
    replay_backoff: Backoff,
}

/// How a batch went, for the caller's bookkeeping.
struct Settled {
    confirmed: usize,
    /// Not confirmed, so spooled: unknown, refused or returned as unroutable.
    failed: usize,
    /// No confirm in time or a failed connection: the session is suspect. (A refused or
    /// returned event says nothing against the session; it is retried from the spool.)
    unknown: usize,
}

impl Pump {
    pub(super) fn new(
        rx: mpsc::Receiver<Outgoing>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        url: Secret,
        retry_delays_ms: Vec<u64>,
        publish_timeout: Duration,
        grace: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            rx,
            shared,
            shutdown,
            url,
            retry_delays_ms,
            publish_timeout,
            grace,
            broker: None,
            reconnect_at: now,
            reconnect_backoff: Backoff::new(RECONNECT_MIN, RECONNECT_MAX),
            replay: None,
            replay_at: now,
            replay_backoff: Backoff::new(REPLAY_RETRY_MIN, REPLAY_RETRY_MAX),
        }
    }

    pub(super) async fn run(mut self) {
        let mut connecting: Option<Connecting> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Not `biased`: live events, replay and housekeeping take turns at random, so a
            // steady stream of live events cannot starve the replay, nor the other way round.
            // An open reader may still have to see its segment's end to delete it.
            let can_replay = self.broker.is_some()
                && (self.replay.is_some() || self.shared.spooled.load(Ordering::Relaxed) > 0);
            let can_connect = self.broker.is_none() && connecting.is_none();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                received = self.rx.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break; // every EventPublisher handle is gone
                    }
                    self.linger(&mut batch).await;
                    let messages = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    self.deliver(&messages).await;
                }
                Some(result) = OptionFuture::from(connecting.as_mut()) => {
                    connecting = None;
                    self.on_connect(result);
                }
                () = tokio::time::sleep_until(self.reconnect_at), if can_connect => {
                    connecting = Some(self.connect());
                }
                () = tokio::time::sleep_until(self.replay_at), if can_replay => self.replay_chunk().await,
                _ = tick.tick() => self.maintain().await,
            }
        }
        drop(connecting);
        self.finish().await;
    }

    fn connect(&self) -> Connecting {
        let url = self.url.clone();
        let delays = self.retry_delays_ms.clone();
        let timeout = self.publish_timeout;
        Box::pin(async move { Broker::connect(url.expose(), &delays, timeout).await })
    }

    fn on_connect(&mut self, result: anyhow::Result<Broker>) {
        match result {
            Ok(broker) => {
                tracing::info!("event publisher connected to the broker");
                self.broker = Some(broker);
                self.shared.connected.store(true, Ordering::Relaxed);
                self.reconnect_backoff.reset();
                self.replay_at = Instant::now();
                self.replay_backoff.reset();
            }
            Err(error) => {
                let retry_in = self.schedule_reconnect();
                tracing::warn!(error = %format!("{error:#}"), ?retry_in, "the broker is unreachable: events are spooled");
            }
        }
    }

    /// Sets the time of the next connection attempt, and returns how far off it is.
    fn schedule_reconnect(&mut self) -> Duration {
        let delay = self.reconnect_backoff.next();
        self.reconnect_at = Instant::now() + delay;
        delay
    }

    async fn lose_broker(&mut self, why: &str) {
        if let Some(broker) = self.broker.take() {
            tracing::warn!(
                reason = why,
                "event publisher lost the broker: events are spooled until it is back"
            );
            self.shared.connected.store(false, Ordering::Relaxed);
            self.schedule_reconnect();
            broker.close().await;
        }
    }

    /// Waits up to [`LINGER`] for a batch to fill a message, as Kafka's `linger.ms` does: the
    /// broker's cost is per message, and without the wait a pack holds only what arrived during
    /// one confirm round trip (a few events at thousands of requests a second). Events are
    /// late by at most that much; requests never wait on it.
    async fn linger(&mut self, batch: &mut Vec<Outgoing>) {
        let until = Instant::now() + LINGER;
        while batch.len() < PACK_EVENTS {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(until, self.rx.recv_many(batch, room)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Publishes live events, or spools them when there is no usable session.
    async fn deliver(&mut self, messages: &[Outgoing]) {
        let deadline = Instant::now() + self.publish_timeout;
        let settled = self.publish_or_spool(messages, deadline, false).await;
        if settled.unknown > 0 && self.broker.is_some() {
            self.lose_broker("publishes failed or timed out").await;
        }
    }

    /// Publishes `messages` when a session is usable and settles each outcome; everything not
    /// confirmed goes to the spool (`moved`: they come from an older segment).
    async fn publish_or_spool(
        &mut self,
        messages: &[Outgoing],
        deadline: Instant,
        moved: bool,
    ) -> Settled {
        let outcomes = match &self.broker {
            Some(broker) if broker.is_usable() => broker.publish_batch(messages, deadline).await,
            _ => vec![Outcome::Unknown; messages.len()],
        };
        let mut confirmed = 0;
        let mut unroutable = 0;
        let mut unknown = 0;
        let mut failed = Vec::new();
        for (message, outcome) in messages.iter().zip(&outcomes) {
            match outcome {
                Outcome::Confirmed => {
                    confirmed += 1;
                    continue;
                }
                Outcome::Unroutable => unroutable += 1,
                Outcome::Nacked => {}
                Outcome::Unknown => unknown += 1,
            }
            failed.push(message.body.as_slice());
        }
        self.shared
            .confirmed
            .fetch_add(confirmed as u64, Ordering::Relaxed);
        if unroutable > 0 {
            self.shared
                .unroutable
                .fetch_add(unroutable, Ordering::Relaxed);
            ::metrics::counter!(UNROUTABLE_COUNTER).increment(unroutable);
            tracing::warn!(
                unroutable,
                routing_key = messages.first().map_or("", |m| m.routing_key),
                "the broker returned events: no queue is bound for their routing key; they are spooled, not delivered"
            );
        }
        let failed_count = failed.len();
        if failed_count > 0 && unknown < failed_count && self.broker.is_some() {
            tracing::warn!(
                refused = failed_count - unknown,
                "the broker did not take every event; spooled for a retry"
            );
        }
        if moved {
            self.shared.spool_moved(failed);
        } else {
            self.shared.spool_new(failed);
        }
        Settled {
            confirmed,
            failed: failed_count,
            unknown,
        }
    }

    /// Publishes the next chunk of the oldest spool segment, deleting the segment once it is
    /// read to its end.
    async fn replay_chunk(&mut self) {
        if !self.broker.as_ref().is_some_and(Broker::is_usable) {
            self.replay_at = Instant::now() + REPLAY_IDLE;
            return;
        }
        if self.replay.is_none() {
            match self.open_next_segment() {
                Ok(Some(reader)) => self.replay = Some(reader),
                Ok(None) => {
                    self.replay_at = Instant::now() + REPLAY_IDLE;
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "a spool segment could not be opened for replay");
                    self.replay_later();
                    return;
                }
            }
        }
        let Some(reader) = self.replay.as_mut() else {
            return;
        };
        let seq = reader.seq;
        let lines = match reader.next_lines(BATCH) {
            Ok(lines) => lines,
            Err(error) => {
                tracing::error!(%error, segment = seq, "a spool segment could not be read");
                self.replay = None;
                self.replay_later();
                return;
            }
        };
        let Some(&(_, end_offset)) = lines.last() else {
            // Read to its end: every event in it was confirmed or moved.
            self.replay = None;
            if let Err(error) = self.shared.spool().remove_sealed(seq) {
                tracing::error!(%error, segment = seq, "a replayed spool segment could not be deleted");
            }
            return;
        };

        let mut messages = Vec::with_capacity(lines.len());
        let mut unreadable = 0u64;
        for (line, _) in lines {
            match Event::from_json(&line) {
                Ok(event) => messages.push(Outgoing {
                    routing_key: event.routing_key(),
                    body: line,
                }),
                Err(error) => {
                    unreadable += 1;
                    tracing::error!(%error, segment = seq, "an unreadable spool line (a torn write?) is skipped");
                }
            }
        }
        let deadline = Instant::now() + self.publish_timeout;
        let settled = self.publish_or_spool(&messages, deadline, true).await;
        if settled.failed > 0 {
            // The moved copies must be on disk before the offset says the originals are done.
            self.sync_spool().await;
        }
        let done = settled.confirmed as u64 + unreadable;
        self.shared.spooled.fetch_sub(done, Ordering::Relaxed);
        if unreadable > 0 {
            self.shared.dropped.fetch_add(unreadable, Ordering::Relaxed);
            ::metrics::counter!(super::DROPPED_COUNTER).increment(unreadable);
        }
        self.shared.update_gauge();
        if let Err(error) = self.shared.spool().save_offset(seq, end_offset) {
            tracing::error!(%error, segment = seq, "the spool replay offset could not be saved");
        }
        if settled.failed > 0 {
            self.replay_later();
            if self.broker.as_ref().is_some_and(|b| !b.is_usable()) {
                self.lose_broker("the connection failed during a replay")
                    .await;
            }
        } else {
            self.replay_backoff.reset();
            self.replay_at = Instant::now();
        }
    }

    /// The oldest sealed segment; seals the active one first when it is all there is.
    fn open_next_segment(&self) -> std::io::Result<Option<SegmentReader>> {
        let mut spool = self.shared.spool();
        if spool.oldest_sealed().is_none() && spool.has_active_events() {
            spool.seal_active();
        }
        let Some((seq, path)) = spool.oldest_sealed() else {
            return Ok(None);
        };
        let offset = spool.offset_of(seq)?;
        SegmentReader::open(seq, &path, offset).map(Some)
    }

    fn replay_later(&mut self) {
        self.replay_at = Instant::now() + self.replay_backoff.next();
    }

    /// Every tick: notice a dead session, fsync the spool, refresh the gauge.
    async fn maintain(&mut self) {
        if self.broker.as_ref().is_some_and(|b| !b.is_usable()) {
            self.lose_broker("the connection or channel closed").await;
        }
        self.sync_spool().await;
        self.shared.update_gauge();
    }

    async fn sync_spool(&self) {
        let unsynced = self.shared.spool().take_unsynced();
        if unsynced.is_empty() {
            return;
        }
        match tokio::task::spawn_blocking(move || unsynced.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the event spool could not be fsync'd"),
            Err(error) => tracing::error!(%error, "the spool fsync task failed"),
        }
    }

    /// After shutdown: no more events through the channel (later ones go straight to the
    /// spool); what it holds is published within the grace period, or spooled.
    async fn finish(mut self) {
        self.rx.close();
        let mut rest = Vec::new();
        while let Some(message) = self.rx.recv().await {
            rest.push(message);
        }
        let deadline = Instant::now() + self.grace;
        for chunk in rest.chunks(BATCH) {
            let chunk_deadline = deadline.min(Instant::now() + self.publish_timeout);
            if Instant::now() >= deadline {
                self.shared
                    .spool_new(chunk.iter().map(|m| m.body.as_slice()));
                continue;
            }
            let settled = self.publish_or_spool(chunk, chunk_deadline, false).await;
            if settled.unknown > 0 && self.broker.is_some() {
                self.lose_broker("publishes failed during shutdown").await;
            }
        }
        self.sync_spool().await;
        self.shared.update_gauge();
        if let Some(broker) = self.broker.take() {
            broker.close().await;
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        let stats = (
            self.shared.confirmed.load(Ordering::Relaxed),
            self.shared.spooled.load(Ordering::Relaxed),
        );
        tracing::info!(
            confirmed = stats.0,
            spooled = stats.1,
            "event publisher stopped"
        );
    }
}
