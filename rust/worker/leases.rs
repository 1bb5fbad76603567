//! Lease renewal from tokio: it never needs the GIL, so a performer that hogs the interpreter
//! cannot make its own lease expire. Renewal continues during a graceful stop, and after it
//! for as long as a performer that could not be stopped still runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::store::Lease;

pub(super) async fn keep_alive(shared: Arc<Shared>) {
    let every = shared.config.lease_ttl / 3;
    // After a failed renewal the next try comes soon, on a fresh connection: the lease has
    // two thirds of its time left for it. Tries back off (doubling) to the usual period.
    let first_retry = Duration::from_millis(200).min(every);
    let mut retry = first_retry;
    let mut next = every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = shared.attempts_settled.cancelled() => return,
        }
        next = every;
        let leases: Vec<Lease> = shared
            .in_flight
            .lock()
            .unwrap()
            .leases
            .keys()
            .copied()
            .collect();
        if leases.is_empty() {
            continue;
        }
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
                next = retry;
                retry = (retry * 2).min(every);
            }
        }
    }
}
