-- Cancel a job that has not started or is waiting for its retry.
UPDATE ferroq_jobs AS j
SET state = 'discarded', error = 'cancelled', done_at = now(), next_attempt_at = NULL
WHERE j.scope = $1 AND j.id = $2 AND j.state IN ('scheduled', 'available', 'retryable')
RETURNING {{job_columns}}
