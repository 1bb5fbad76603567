-- Record a batch of finished attempts in one statement. Each row applies only while the
-- attempt still holds the job (same lease token, still running): a stale attempt whose lease
-- was rescued and handed on can never complete or fail the newer attempt's job.
-- A job that will run again (a retry or snooze, with its time; or released by a stopping
-- worker) is announced on the scope's channel at COMMIT, like a new job: idle workers of any
-- process then look again and wait for its time, instead of the safety poll.
-- A job whose cancel was requested while it ran never runs again: an outcome that would run
-- it again (a retry, snooze or release, written before its worker heard of the request)
-- ends it discarded instead; a completion or a failure stands.
-- A completion clears the error of earlier failed attempts: a completed job has no error.
WITH finished AS (
UPDATE ferroq_jobs AS j
SET state = CASE WHEN j.cancel_requested_at IS NOT NULL
                      AND f.state IN ('retryable', 'scheduled', 'available')
                 THEN 'discarded' ELSE f.state END,
    result = f.result::json,
    error = CASE WHEN j.cancel_requested_at IS NOT NULL
                      AND f.state IN ('retryable', 'scheduled', 'available')
                 THEN {{cancelled_while_running}}
                 WHEN f.state = 'completed' THEN NULL
                 ELSE coalesce(f.error, j.error) END,
    attempts = j.attempts - f.refund,
    next_attempt_at = CASE WHEN f.delay IS NULL OR j.cancel_requested_at IS NOT NULL THEN NULL
                           ELSE now() + f.delay * interval '1 second' END,
    run_at = CASE WHEN f.delay IS NULL OR j.cancel_requested_at IS NOT NULL THEN j.run_at
                  ELSE now() + f.delay * interval '1 second' END,
    done_at = CASE WHEN f.state IN ('completed', 'failed', 'discarded')
                        OR j.cancel_requested_at IS NOT NULL THEN now() END,
    lease_token = NULL,
    lease_expires_at = NULL
FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::int4[])
     AS f(id, token, state, result, error, delay, refund)
WHERE j.id = f.id AND j.lease_token = f.token AND j.state = 'running'
RETURNING j.id, j.scope,
          (f.delay IS NOT NULL OR f.state = 'available') AND j.cancel_requested_at IS NULL AS runs_again
), announced AS (
    SELECT pg_notify('ferroq_jobs', again.scope)
    FROM (SELECT DISTINCT finished.scope FROM finished WHERE finished.runs_again) AS again
)
SELECT finished.id
FROM finished CROSS JOIN (SELECT count(*) FROM announced) AS forced
