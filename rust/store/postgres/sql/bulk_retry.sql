-- retry_job.sql for every job the filter matches ($4: the states a retry applies to).
UPDATE ferroq_jobs AS j
SET state = 'available', run_at = now(), next_attempt_at = NULL, done_at = NULL, head = NULL,
    max_attempts = greatest(j.max_attempts, j.attempts + 1)
WHERE {{filter}}
