//! Batches as one JSON parameter (plus one bytes parameter for bytes params), expanded in SQL
//! (`json_each`, `jsonb_array_elements`): a batch of any size is one statement with few
//! parameters. SQLite takes every batch this way; PostgreSQL takes the caller's-connection
//! insert this way, since any driver binds a string and bytes (its pool binds arrays in
//! binary, which is faster).

use crate::job::{NewJob, Schedule};
use crate::store::Finish;

/// A batch to insert as two parameters: the JSON array `insert_jobs.sql` expands, and the
/// bytes params of its jobs end to end, which each job's entry slices by offset and length.
/// Bytes travel as bytes (no text encoding, no size doubling), and SQL only slices them, which
/// every supported SQLite and PostgreSQL can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertBatch {
    /// One array per job, in order: `[queue, action, params (JSON text; "null" for bytes
    /// params), blocking, priority, max_attempts, timeout, max_backoff, scheduled_at (µs since
    /// the epoch) or null, delay (s) or null, bytes offset or null, bytes length or null]`.
    pub json: String,
    /// Every bytes job's params, in order.
    pub bytes: Vec<u8>,
}

/// `jobs` as an [`InsertBatch`].
pub fn encode_insert_batch(jobs: &[NewJob]) -> InsertBatch {
    let mut bytes = Vec::new();
    // Tuples serialize as JSON arrays straight into the string, without building Values.
    let batch: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (at, delay) = match job.schedule {
                Schedule::Now => (None, None),
                Schedule::At(t) => (Some(t.timestamp_micros()), None),
                Schedule::In(d) => (None, Some(d)),
            };
            let slice = job.params.bytes_column().map(|own| {
                let offset = bytes.len();
                bytes.extend_from_slice(own);
                (offset, own.len())
            });
            (
                &job.queue,
                &job.action,
                job.params.json_column(),
                job.blocking,
                job.priority,
                job.max_attempts,
                job.timeout,
                job.max_backoff,
                at,
                delay,
                slice.map(|(offset, _)| offset),
                slice.map(|(_, len)| len),
            )
        })
        .collect();
    let json = serde_json::to_string(&batch).expect("a batch of strings and numbers serializes");
    InsertBatch { json, bytes }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    #[test]
    fn bytes_params_are_sliced_out_of_one_buffer_in_order() {
        let jobs: Vec<NewJob> = [
            JobSpec::new("q", "a", vec![1u8, 2]),
            JobSpec::new("q", "a", r#"{"n":1}"#),
            JobSpec::new("q", "a", Vec::new()),
            JobSpec::new("q", "a", vec![0u8, 255, 3]),
        ]
        .into_iter()
        .map(|spec| spec.into_new_job(true, 100).unwrap())
        .collect();
        let batch = encode_insert_batch(&jobs);
        assert_eq!(batch.bytes, vec![1, 2, 0, 255, 3]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&batch.json).unwrap();
        let slice = |row: &serde_json::Value| (row[2].clone(), row[10].clone(), row[11].clone());
        use serde_json::json;
        assert_eq!(slice(&rows[0]), (json!("null"), json!(0), json!(2)));
        assert_eq!(
            slice(&rows[1]),
            (json!(r#"{"n":1}"#), json!(null), json!(null))
        );
        assert_eq!(slice(&rows[2]), (json!("null"), json!(2), json!(0)));
        assert_eq!(slice(&rows[3]), (json!("null"), json!(2), json!(3)));
    }
}
