//! The completer: writes outcomes in batches. Whatever arrived while the previous batch was
//! being written goes out in the next statement, so batching adds no waiting of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Shared;
use crate::store::Finish;

/// Most outcomes in one statement. Smaller batches pipeline: a blocking queue's next job can
/// be claimed once its predecessor's outcome is written, so the producer claims the heads one
/// batch handed on while the completer writes the next. 1,000 outcomes at once made the
/// 1,000-queue blocking drain alternate one big write and one big claim (~13k jobs/s against
/// ~19k at 250, same run); the one-queue drain did not change.
const MAX_BATCH: usize = 250;

pub(super) async fn run(shared: Arc<Shared>, mut finishes: mpsc::UnboundedReceiver<Finish>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = finishes.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match finishes.try_recv() {
                Ok(finish) => batch.push(finish),
                Err(_) => break,
            }
        }
        write(&shared, &batch).await;
        shared.retire(batch.drain(..).map(|finish| finish.lease));
    }
}

/// Write one batch, retrying through database outages. If the database stays away past
/// shutdown, the outcome is dropped and the lease expires: the job runs again (at least once),
/// it is never lost.
async fn write(shared: &Shared, batch: &[Finish]) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match shared.store.finish(batch).await {
            Ok(held) => {
                if held.len() < batch.len() {
                    log::info!(
                        "ferroq: {} outcomes were not written: their attempts had lost the lease",
                        batch.len() - held.len()
                    );
                }
                return;
            }
            Err(err) => {
                if shared.shutdown.is_cancelled() {
                    log::warn!("ferroq: dropping {} outcomes at shutdown ({err}); those jobs will run again", batch.len());
                    return;
                }
                log::warn!(
                    "ferroq: writing {} outcomes failed ({err}); retrying in {backoff:?}",
                    batch.len()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
