//! Batches as one JSON parameter (plus one bytes parameter holding every job's params),
//! expanded in SQL (`json_each`, `jsonb_array_elements`): a batch of any size is one statement
//! with few parameters. SQLite takes every batch this way; PostgreSQL takes the
//! caller's-connection insert this way, since any driver binds a string and bytes (its pool
//! binds arrays in binary, which is faster).

use crate::job::{any_unique, NewJob, Schedule};
use crate::store::Finish;

/// A batch to insert as two parameters: the JSON array `insert_jobs.sql` expands, and the
/// params of its jobs end to end, which each job's entry slices by offset and length.
/// Params travel outside the JSON array, so a large payload is neither escaped into it (which
/// grows text full of quotes or backslashes) nor copied by every JSON function that reads an
/// entry: SQLite's `json_extract` copies and parses the entry it reads, once per option, and
/// a 50 MiB payload inside the entry cost gigabytes. Bytes params travel as bytes (no text
/// encoding, no size doubling), JSON params as their UTF-8 text; SQL only slices them, which
/// every supported SQLite and PostgreSQL can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertBatch {
    /// One array per job, in order: `[queue, action, params are JSON (true) or bytes (false),
    /// blocking, priority, max_attempts, timeout, max_backoff, scheduled_at (µs since the
    /// epoch) or null, delay (s) or null, params offset in bytes, params length in bytes]`.
    pub json: String,
    /// Every job's params, in order: JSON text as UTF-8, bytes as given.
    pub bytes: Vec<u8>,
}

/// `jobs` as an [`InsertBatch`]. A batch with a unique job (see `job::any_unique`) has three
/// more values per job: `unique key or null, unique period (whole seconds) or null, unique
/// states mask or null`; a plain batch has none, so the plain insert reads what it did before.
pub fn encode_insert_batch(jobs: &[NewJob]) -> InsertBatch {
    let mut bytes = Vec::with_capacity(jobs.iter().map(|job| job.params.len()).sum());
    let mut slice = |job: &NewJob| {
        let own = match job.params.bytes_column() {
            Some(own) => own,
            None => job.params.json_column().as_bytes(),
        };
        let offset = bytes.len();
        bytes.extend_from_slice(own);
        (offset, own.len())
    };
    let schedule = |job: &NewJob| match job.schedule {
        Schedule::Now => (None, None),
        Schedule::At(t) => (Some(t.timestamp_micros()), None),
        Schedule::In(d) => (None, Some(d)),
    };
    // Tuples serialize as JSON arrays straight into the string, without building Values.
    let json = if any_unique(jobs) {
        let batch: Vec<_> = jobs
            .iter()
            .map(|job| {
                let (at, delay) = schedule(job);
                let (offset, len) = slice(job);
                let unique = job.unique.as_ref();
                (
                    &job.queue,
                    &job.action,
                    job.params.bytes_column().is_none(),
                    job.blocking,
                    job.priority,
                    job.max_attempts,
                    job.timeout,
                    job.max_backoff,
                    at,
                    delay,
                    offset,
                    len,
                    unique.map(|u| &u.key.key),
                    unique.and_then(|u| u.key.period),
                    unique.map(|u| u.states),
                )
            })
            .collect();
        serde_json::to_string(&batch)
    } else {
        let batch: Vec<_> = jobs
            .iter()
            .map(|job| {
                let (at, delay) = schedule(job);
                let (offset, len) = slice(job);
                (
                    &job.queue,
                    &job.action,
                    job.params.bytes_column().is_none(),
                    job.blocking,
                    job.priority,
                    job.max_attempts,
                    job.timeout,
                    job.max_backoff,
                    at,
                    delay,
                    offset,
                    len,
                )
            })
            .collect();
        serde_json::to_string(&batch)
    };
    let json = json.expect("a batch of strings and numbers serializes");
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
    fn params_are_sliced_out_of_one_buffer_in_order() {
        let jobs: Vec<NewJob> = [
            JobSpec::new("q", "a", vec![1u8, 2]),
            JobSpec::new("q", "a", r#"{"n":"\"é"}"#),
            JobSpec::new("q", "a", Vec::new()),
            JobSpec::new("q", "a", vec![0u8, 255, 3]),
        ]
        .into_iter()
        .map(|spec| spec.into_new_job(true, 100).unwrap())
        .collect();
        let batch = encode_insert_batch(&jobs);
        let text = r#"{"n":"\"é"}"#.as_bytes();
        assert_eq!(batch.bytes, [&[1, 2], text, &[0, 255, 3]].concat());
        assert!(
            !batch.json.contains("\\\""),
            "params are not escaped into the array"
        );
        let rows: Vec<serde_json::Value> = serde_json::from_str(&batch.json).unwrap();
        let slice = |row: &serde_json::Value| (row[2].clone(), row[10].clone(), row[11].clone());
        use serde_json::json;
        assert_eq!(slice(&rows[0]), (json!(false), json!(0), json!(2)));
        assert_eq!(slice(&rows[1]), (json!(true), json!(2), json!(text.len())));
        let end = 2 + text.len();
        assert_eq!(slice(&rows[2]), (json!(false), json!(end), json!(0)));
        assert_eq!(slice(&rows[3]), (json!(false), json!(end), json!(3)));
    }
}
