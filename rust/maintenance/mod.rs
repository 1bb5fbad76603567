//! Periodic upkeep that runs in every worker, never as a job (a stalled job queue must not be
//! able to stall its own rescue): expired-lease rescue, retention cleanup, and the scheduler
//! of periodic (cron) entries.

pub mod periodic;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Put jobs of dead workers back to work; wake the producer when any came back.
pub async fn rescue_loop(
    store: Arc<dyn Store>,
    scope: String,
    every: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match store.rescue_expired(&scope).await {
            Ok(0) => {}
            Ok(n) => {
                log::warn!("ferroq: rescued {n} jobs whose worker stopped renewing their lease");
                wake.notify_one();
            }
            Err(err) => log::warn!("ferroq: rescuing expired leases failed ({err})"),
        }
    }
}

/// Completed jobs deleted per statement by the cleaner.
pub const CLEANUP_BATCH: i64 = 5_000;

/// Delete this scope's completed jobs once they are older than the retention.
pub async fn cleanup_loop(
    store: Arc<dyn Store>,
    scope: String,
    every: Duration,
    retention: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        // In batches, each its own short statement (and on SQLite its own short hold of the
        // write lock), until a batch finds fewer than it may delete.
        loop {
            match store
                .delete_completed(&scope, retention, CLEANUP_BATCH)
                .await
            {
                Ok(deleted) if deleted < CLEANUP_BATCH as u64 || stop.is_cancelled() => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(err) => {
                    log::warn!("ferroq: cleaning up completed jobs failed ({err})");
                    break;
                }
            }
        }
    }
}
