UPDATE ferroq_jobs
SET state = 'discarded', error = 'cancelled', done_at = {{now}}, next_attempt_at = NULL
WHERE scope = ?1 AND id = ?2 AND state IN ('scheduled', 'available', 'retryable')
RETURNING {{job_columns}}
