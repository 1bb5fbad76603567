//! Batches as one JSON parameter, expanded in SQL (`json_each`, `jsonb_array_elements`): a
//! batch of any size is one statement with few parameters. SQLite takes every batch this way;
//! PostgreSQL takes the caller's-connection insert this way, since any driver binds a string
//! (its pool binds arrays in binary, which is faster).

use crate::job::{NewJob, Schedule};
use crate::store::Finish;

/// The JSON array `insert_jobs.sql` expands: one array per job, in order:
/// `[queue, action, params (JSON text), blocking, priority, max_attempts, timeout,
/// max_backoff, scheduled_at (µs since the epoch) or null, delay (s) or null]`.
pub fn encode_insert_batch(jobs: &[NewJob]) -> String {
    // Tuples serialize as JSON arrays straight into the string, without building Values.
    let batch: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (at, delay) = match job.schedule {
                Schedule::Now => (None, None),
                Schedule::At(t) => (Some(t.timestamp_micros()), None),
                Schedule::In(d) => (None, Some(d)),
            };
            (
                &job.queue,
                &job.action,
                &job.params,
                job.blocking,
                job.priority,
                job.max_attempts,
                job.timeout,
                job.max_backoff,
                at,
                delay,
            )
        })
        .collect();
    serde_json::to_string(&batch).expect("a batch of strings and numbers serializes")
}

/// The JSON array SQLite's `finish_jobs.sql` expands: one array per outcome.
pub fn encode_finish_batch(finishes: &[Finish]) -> String {
    let batch: Vec<_> = finishes
        .iter()
        .map(|f| {
            (
                f.lease.id,
                f.lease.token,
                f.state.as_str(),
                &f.result,
                &f.error,
                f.delay,
                f.refund_attempt as i32,
            )
        })
        .collect();
    serde_json::to_string(&batch).expect("a batch of strings and numbers serializes")
}
