-- A job back in a blocking queue has its place decided again by the next claim (head IS NULL).
UPDATE ferroq_jobs
SET state = 'available', run_at = {{now}}, next_attempt_at = NULL, done_at = NULL, head = NULL,
    cancel_requested_at = NULL, max_attempts = max(max_attempts, attempts + 1)
WHERE scope = ?1 AND id = ?2
  AND state IN ('scheduled', 'available', 'retryable', 'failed', 'discarded')
RETURNING {{job_columns}}
