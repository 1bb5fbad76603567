-- Record a batch of finished attempts in one statement. ?1 is a JSON array with one array per
-- attempt: [id, lease token, state, result (JSON text) or null, error or null, delay (s) or
-- null, 1 to give the attempt back else 0]. Each applies only while its attempt still holds
-- the job (same lease token, still running): a stale attempt can never finish a newer one's job.
-- A job whose cancel was requested while it ran never runs again (see the PostgreSQL twin).
-- A completion clears the error of earlier failed attempts: a completed job has no error.
UPDATE ferroq_jobs
SET state = CASE WHEN ferroq_jobs.cancel_requested_at IS NOT NULL
                      AND f.state IN ('retryable', 'scheduled', 'available')
                 THEN 'discarded' ELSE f.state END,
    result = json(f.result),
    error = CASE WHEN ferroq_jobs.cancel_requested_at IS NOT NULL
                      AND f.state IN ('retryable', 'scheduled', 'available')
                 THEN {{cancelled_while_running}}
                 WHEN f.state = 'completed' THEN NULL
                 ELSE coalesce(f.error, ferroq_jobs.error) END,
    attempts = ferroq_jobs.attempts - f.refund,
    next_attempt_at = CASE WHEN f.delay IS NULL OR ferroq_jobs.cancel_requested_at IS NOT NULL
                           THEN NULL
                           ELSE f.now + CAST(f.delay * 1000000 AS INTEGER) END,
    run_at = CASE WHEN f.delay IS NULL OR ferroq_jobs.cancel_requested_at IS NOT NULL
                  THEN ferroq_jobs.run_at
                  ELSE f.now + CAST(f.delay * 1000000 AS INTEGER) END,
    done_at = CASE WHEN f.state IN ('completed', 'failed', 'discarded')
                        OR ferroq_jobs.cancel_requested_at IS NOT NULL THEN f.now END,
    lease_token = NULL,
    lease_expires_at = NULL
FROM (
    SELECT json_extract(j.value, '$[0]') AS id, json_extract(j.value, '$[1]') AS token,
           json_extract(j.value, '$[2]') AS state, json_extract(j.value, '$[3]') AS result,
           json_extract(j.value, '$[4]') AS error, json_extract(j.value, '$[5]') AS delay,
           json_extract(j.value, '$[6]') AS refund, n.now
    FROM json_each(?1) AS j, (SELECT {{now}} AS now) AS n
) AS f
WHERE ferroq_jobs.id = f.id AND ferroq_jobs.lease_token = f.token
  AND ferroq_jobs.state = 'running'
RETURNING ferroq_jobs.id
