-- Run a waiting or finished-unsuccessfully job again now, with at least one attempt left. A
-- job back in a blocking queue has its place decided again by the next claim (head IS NULL).
UPDATE ferroq_jobs AS j
SET state = 'available', run_at = now(), next_attempt_at = NULL, done_at = NULL, head = NULL,
    cancel_requested_at = NULL, max_attempts = greatest(j.max_attempts, j.attempts + 1)
WHERE j.scope = $1 AND j.id = $2
  AND j.state IN ('scheduled', 'available', 'retryable', 'failed', 'discarded')
RETURNING {{job_columns}}
