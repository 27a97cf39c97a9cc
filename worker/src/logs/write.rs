//! The write of a batch: one transaction that inserts the rows and applies billing, quotas and
//! rate-limit counters from what was inserted, retried with backoff while the database is
//! down or busy.

use std::time::Duration;

use lapin::Channel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wrapx_core::{
    backoff::{Backoff, Jitter},
    events::RequestEvent,
};

use super::{db_errors::WriteError, rows::Columns};
use crate::{billing, metrics, publish::publish_all, Worker};

/// How a batch's write ended.
pub(super) enum Written {
    Committed,
    /// The worker is stopping while the write keeps failing.
    Stopped,
    /// PostgreSQL refused the data itself (a constraint, an invalid value): retrying the same
    /// rows cannot succeed.
    Refused(sqlx::Error),
}

pub(super) async fn write_retrying(
    worker: &Worker,
    publisher: &Channel,
    events: &[&RequestEvent],
    stop: &CancellationToken,
) -> Written {
    // Up to a quarter extra, so batches of several workers do not retry in step.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(Jitter::Extra(0.25));
    loop {
        let started = Instant::now();
        match write(worker, publisher, events).await {
            Ok(inserted) => {
                metrics::batch(started.elapsed().as_secs_f64());
                tracing::debug!(rows = events.len(), inserted, "batch written");
                return Written::Committed;
            }
            Err(WriteError::Data(e)) => return Written::Refused(e),
            Err(WriteError::Transient(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    rows = events.len(),
                    "writing a batch failed: retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Written::Stopped,
                    _ = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
}

/// One transaction: the rows, then billing, quotas and rate-limit counters from what was
/// inserted, then the quota events (published before the commit, so a failed publish rolls
/// the batch back and it is tried again; their ids are derived from the cause, so a retry
/// publishes the same events again, never different ones).
async fn write(
    worker: &Worker,
    publisher: &Channel,
    events: &[&RequestEvent],
) -> Result<usize, WriteError> {
    let rows = Columns::new(worker, events);
    let mut tx = worker.pool.begin().await?;
    let inserted = rows.insert(&mut tx).await?;
    if !inserted.is_empty() {
        let quota = billing::apply(&mut tx, &worker.pricing, &inserted).await?;
        let outgoing = billing::raise_quota_alerts(&mut tx, &quota).await?;
        if !outgoing.is_empty() {
            let timeout = Duration::from_millis(worker.settings.amqp.publish_timeout_ms);
            publish_all(publisher, &outgoing, timeout)
                .await
                .map_err(|e| {
                    WriteError::Transient(anyhow::Error::new(e).context("publish quota events"))
                })?;
        }
    }
    tx.commit().await?;
    metrics::committed(inserted.iter().map(|row| (row.cost, row.at)));
    Ok(inserted.len())
}
