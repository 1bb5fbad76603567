//! Lease renewal from tokio: it never needs the GIL, so a performer that hogs the interpreter
//! cannot make its own lease expire. Renewal continues during a graceful stop, and after it
//! for as long as a performer that could not be stopped still runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Dispatch, Shared};
use crate::store::Lease;

/// Looks for cancel requests prompted by an announcement come at most this often: on SQLite
/// every commit of another process is one, and each look is a query.
const CANCEL_LOOK_GAP: Duration = Duration::from_millis(100);

pub(super) async fn keep_alive(shared: Arc<Shared>, dispatcher: Arc<dyn Dispatch>) {
    let every = shared.config.lease_ttl / 3;
    // After a failed renewal the next try comes soon, on a fresh connection: the lease has
    // two thirds of its time left for it. Tries back off (doubling) to the usual period.
    let first_retry = Duration::from_millis(200).min(every);
    let mut retry = first_retry;
    let mut renew_at = tokio::time::Instant::now() + every;
    loop {
        let announced = tokio::select! {
            _ = tokio::time::sleep_until(renew_at) => false,
            _ = shared.cancels.notified() => true,
            _ = shared.attempts_settled.cancelled() => return,
        };
        let leases: Vec<Lease> = shared
            .in_flight
            .lock()
            .unwrap()
            .leases
            .keys()
            .copied()
            .collect();
        if announced {
            // A cancel request may concern a job here: ask, between renewals.
            if !leases.is_empty() {
                look_for_cancels(&shared, &dispatcher, &leases).await;
                // Never past the next renewal.
                let gap_end = tokio::time::Instant::now() + CANCEL_LOOK_GAP;
                tokio::time::sleep_until(gap_end.min(renew_at)).await;
            }
            continue;
        }
        renew_at = tokio::time::Instant::now() + every;
        if leases.is_empty() {
            continue;
        }
        // The fallback for a missed announcement (and the only way in drain mode).
        look_for_cancels(&shared, &dispatcher, &leases).await;
        match shared
            .store
            .extend_leases(&leases, shared.config.lease_ttl)
            .await
        {
            Ok(held) => {
                retry = first_retry;
                if held.len() < leases.len() {
                    let held: HashSet<i64> = held.into_iter().collect();
                    // An attempt whose performer has reported may have had its outcome written
                    // since the leases were read: only an unreported one has really lost it.
                    let (lost, dropped) = {
                        let mut attempts = shared.in_flight.lock().unwrap();
                        let lost: Vec<i64> = leases
                            .iter()
                            .filter(|lease| !held.contains(&lease.id))
                            .filter(|lease| attempts.leases.get(lease).is_some_and(|e| !e.reported))
                            .map(|lease| lease.id)
                            .collect();
                        // A job claimed ahead that lost its lease is never started here.
                        let dropped = attempts.drop_lost_reservations(&lost);
                        (lost, dropped)
                    };
                    if dropped > 0 {
                        // Room in the buffer, and perhaps nothing left in flight for a stop.
                        shared.wake.notify_one();
                        shared.progressed.notify_waiters();
                    }
                    // Outcomes still written after this are fenced off by the lease token.
                    if !lost.is_empty() {
                        log::warn!(
                            "ferroq: lost the lease of jobs {lost:?}; another worker may run them"
                        );
                    }
                }
            }
            Err(err) => {
                log::warn!(
                    "ferroq: renewing {} leases failed ({err}); retrying",
                    leases.len()
                );
                renew_at = tokio::time::Instant::now() + retry;
                retry = (retry * 2).min(every);
            }
        }
    }
}

/// Ask the store which of `leases` had their job's cancel requested, and act on them: jobs
/// claimed ahead end discarded at once, started ones have their performers interrupted.
async fn look_for_cancels(shared: &Arc<Shared>, dispatcher: &Arc<dyn Dispatch>, leases: &[Lease]) {
    let requested = match shared.store.cancel_requested(leases).await {
        Ok(ids) if ids.is_empty() => return,
        Ok(ids) => ids,
        Err(err) => {
            log::warn!("ferroq: looking for cancel requests failed ({err}); looking again later");
            return;
        }
    };
    let (finishes, interrupt) = shared
        .in_flight
        .lock()
        .unwrap()
        .take_cancel_requests(&requested);
    if !finishes.is_empty() {
        shared.send_finishes(finishes);
        shared.wake.notify_one();
    }
    if !interrupt.is_empty() {
        let ids: Vec<i64> = interrupt.iter().map(|lease| lease.id).collect();
        log::info!("ferroq: cancelling running jobs {ids:?} as requested");
        let dispatcher = dispatcher.clone();
        // The interpreter may be busy: its lock is never awaited on the runtime's threads.
        tokio::task::spawn_blocking(move || dispatcher.cancel(interrupt));
    }
}
