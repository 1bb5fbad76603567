//! The producer: claims as many jobs as there are free slots plus room in the reservation
//! buffer, in one statement per queue kind. What fits the free slots goes to the dispatcher at
//! once, as one batch; the rest waits reserved, and starts from memory as performers report
//! (see `Worker::report_many`), while the next claim is already under way.

use std::sync::Arc;
use std::time::Duration;

use super::{finish_for, Dispatch, InFlight, Outcome, Shared};
use crate::job::Job;
use crate::store::{ClaimRequest, DueTimes, Finish};

pub(super) async fn run(shared: Arc<Shared>, dispatcher: Arc<dyn Dispatch>) {
    let config = &shared.config;
    let mut error_backoff = Duration::from_millis(50);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        if shared.stop_claiming.is_cancelled() {
            return;
        }
        // Registered before looking, so a wake-up between the look and the wait is kept.
        let woken = shared.wake.notified();
        shared.release_reserved(false);
        let (free, free_slots) = shared.claim_room();
        if free == 0 {
            // Every slot runs and the buffer is full: wait for a report, for the oldest
            // reservation to expire, or for a pause of claiming ahead to end.
            let expiry = shared
                .next_deadline()
                .unwrap_or_else(|| tokio::time::Instant::now() + config.poll_interval);
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(expiry) => {}
                _ = shared.stop_claiming.cancelled() => return,
            }
            continue;
        }
        // Sampled before claiming: if nothing was in flight then, an empty claim means nothing
        // is left to run now. Sampled after, an outcome written meanwhile could have unblocked
        // a queue the claim had already looked at.
        let in_flight_before_claim = shared.in_flight_count();
        let claim_started = tokio::time::Instant::now();
        let request = ClaimRequest {
            scope: &shared.scope,
            limit: free,
            blocking_limit: free_slots,
            queues: &shared.queues,
            worker_name: &config.worker_name,
            lease_ttl: config.lease_ttl,
            actions: Some(&shared.actions),
        };
        let jobs = match shared.store.claim(&request).await {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(50);
                failing_since = None;
                jobs
            }
            Err(err)
                if config.drain
                    // Counted from the start of the first claim that failed: against a
                    // server that never answers, that one claim may take all the time.
                    && failing_since
                        .get_or_insert(claim_started)
                        .elapsed()
                        >= config.drain_gives_up_after =>
            {
                // A drain is a call that must return: after retrying for as long as a
                // connection may take, it ends with the error instead of waiting for good.
                *shared.drain_failed.lock().unwrap() = Some(err);
                return;
            }
            Err(err) => {
                // A drain's last retry comes when it would give up, not a long backoff later.
                let pause = match failing_since {
                    Some(since) if config.drain => error_backoff
                        .min(config.drain_gives_up_after.saturating_sub(since.elapsed())),
                    _ => error_backoff,
                };
                log::warn!("ferroq: claiming jobs failed ({err}); retrying in {pause:?}");
                let reservation_expiry = shared
                    .next_deadline()
                    .unwrap_or_else(|| tokio::time::Instant::now() + pause);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    // Reservations are handed back at the top of the loop.
                    _ = tokio::time::sleep_until(reservation_expiry) => continue,
                    _ = shared.stop_claiming.cancelled() => return,
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let claimed = jobs.len();
        if claimed > 0 {
            match shared.admit(jobs) {
                Ok(ready) if !ready.is_empty() => dispatcher.dispatch(ready),
                Ok(_) => {}
                Err(jobs) => {
                    // A stop began while this claim was under way, and may no longer wait
                    // for it: put the jobs back at once, their attempts unused, rather than
                    // start them.
                    put_back(&shared, &jobs).await;
                    return;
                }
            }
            if claimed == free {
                // Every slot was filled: there may be more; look again once a slot frees.
                continue;
            }
        }
        // Jobs claimed ahead that wait for a slot are handed back when their reservation
        // expires, and claiming ahead resumes when its pause ends, whatever else this loop
        // waits for.
        let reservation_expiry = shared
            .next_deadline()
            .unwrap_or_else(|| tokio::time::Instant::now() + config.poll_interval);
        if config.drain {
            if claimed == 0 && in_flight_before_claim == 0 {
                return;
            }
            // Outcomes being written may unblock the next job of a blocking queue.
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(reservation_expiry) => {}
                _ = shared.stop_claiming.cancelled() => return,
            }
            continue;
        }
        // Sleep until woken, until the next scheduled or retrying job is due, or the safety poll.
        // After a claim that found jobs, their outcomes will wake us soon and the next claim
        // looks again; only an empty claim needs to ask when the next waiting job is due.
        let nap = if claimed > 0 {
            config.poll_interval
        } else {
            match shared.store.next_run_in(&shared.scope).await {
                // A job became due after the claim looked (a short snooze or backoff, on a busy
                // machine): it is no longer "next", so look again now rather than sleep past it.
                Ok(due)
                    if due
                        .last_due_ago
                        .is_some_and(|ago| ago <= claim_started.elapsed().as_secs_f64()) =>
                {
                    continue;
                }
                Ok(DueTimes {
                    next_in: Some(seconds),
                    ..
                }) => Duration::from_secs_f64(seconds.max(0.0)),
                _ => config.poll_interval,
            }
            .min(config.poll_interval)
        };
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(nap) => {}
            _ = tokio::time::sleep_until(reservation_expiry) => {}
            _ = shared.stop_claiming.cancelled() => return,
        }
    }
}

/// Release claimed jobs that will not be started.
async fn put_back(shared: &Shared, jobs: &[Job]) {
    let releases: Vec<Finish> = jobs
        .iter()
        .map(|job| {
            let (lease, entry) = InFlight::claimed(job);
            finish_for(lease, &entry, Outcome::Released)
        })
        .collect();
    if let Err(err) = shared.store.finish(&releases).await {
        log::warn!(
            "ferroq: could not put back {} jobs claimed as the worker stopped ({err}); their leases will expire",
            releases.len()
        );
    }
}
