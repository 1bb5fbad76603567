-- cancel_job.sql for every waiting job the filter matches (running ones: bulk_request_cancel.sql).
-- The ids go to promote_heads.sql, which hands on the blocking queues whose head was cancelled.
UPDATE ferroq_jobs
SET state = 'discarded', error = 'cancelled', done_at = {{now}}, next_attempt_at = NULL
WHERE {{filter}}
  AND state IN ('scheduled', 'available', 'retryable')
RETURNING id
