//! The scheduler of periodic entries, run by every worker: no leader. Each worker sleeps until
//! the next tick on the database clock, then asks the store to enqueue it; the store inserts
//! each tick once, whichever worker comes first (see `Store::enqueue_tick`).
//!
//! Catch-up: a worker enqueues only the latest tick due, so ticks missed while no worker ran
//! are not replayed, and the latest one of them is enqueued once. An entry seen for the first
//! time starts after its latest past tick.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::periodic::PeriodicJob;
use crate::store::Store;

/// The longest sleep between two looks: the local clock may drift from the database's, and an
/// entry whose row was moved by hand (or deleted) is seen again within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Past the tick when waking: the database clock must have reached it.
const WAKE_MARGIN: Duration = Duration::from_millis(5);
/// After a failed look, the first pause; it doubles up to `MAX_RETRY_PAUSE`.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// Enqueue the ticks of `entries` as they come, until `stop`. Errors are logged and retried:
/// a database outage delays ticks (the latest one missed is enqueued once it is back), and
/// never stops the worker.
pub async fn schedule_loop(
    store: Arc<dyn Store>,
    scope: String,
    entries: Vec<PeriodicJob>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    if entries.is_empty() {
        return;
    }
    let mut retry_pause = FIRST_RETRY_PAUSE;
    loop {
        let pause = match enqueue_due(store.as_ref(), &scope, &entries, &wake).await {
            Ok(next_in) => {
                retry_pause = FIRST_RETRY_PAUSE;
                next_in.map_or(MAX_SLEEP, |next_in| (next_in + WAKE_MARGIN).min(MAX_SLEEP))
            }
            Err(err) => {
                log::warn!(
                    "ferroq: enqueueing periodic jobs failed ({err}); retrying in {retry_pause:?}"
                );
                let pause = retry_pause;
                retry_pause = (retry_pause * 2).min(MAX_RETRY_PAUSE);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One look: enqueue each entry's latest due tick that is not enqueued yet. Returns how long
/// until the next tick of any entry, on the database clock.
async fn enqueue_due(
    store: &dyn Store,
    scope: &str,
    entries: &[PeriodicJob],
    wake: &Notify,
) -> Result<Option<Duration>> {
    let ticks = store.periodic_ticks(scope).await?;
    let now = ticks.now;
    let mut next: Option<DateTime<Utc>> = None;
    for entry in entries {
        let due = entry.schedule.latest_at_or_before(now);
        match (ticks.last_ticks.get(&entry.name), due) {
            (None, _) => {
                // New: its past ticks are not its to run.
                store
                    .start_periodic(scope, &entry.name, due.unwrap_or(now))
                    .await?;
            }
            (Some(last), Some(due)) if *last < due => {
                if let Some(job) = store
                    .enqueue_tick(scope, &entry.name, due, &entry.job_at(due))
                    .await?
                {
                    log::debug!(
                        "ferroq: periodic entry {:?} enqueued job {} for its tick at {due}",
                        entry.name,
                        job.id
                    );
                    wake.notify_one();
                }
            }
            _ => {}
        }
        if let Some(tick) = entry.schedule.next_after(now) {
            next = Some(next.map_or(tick, |next| next.min(tick)));
        }
    }
    Ok(next.map(|tick| (tick - now).to_std().unwrap_or(Duration::ZERO)))
}
