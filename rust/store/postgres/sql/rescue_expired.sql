-- A lease nobody renewed means its worker is gone: the job runs again at once, or fails when
-- that attempt was its last. The crashed attempt counts, so a job that kills its worker
-- every time ends as failed instead of looping forever.
UPDATE ferroq_jobs AS j
SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'available' END,
    error = 'lease expired: attempt ' || j.attempts || ' by ' || coalesce(j.attempted_by, 'unknown worker')
            || ' stopped renewing its lease (worker killed or stalled)',
    done_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
    run_at = now(),
    lease_token = NULL,
    lease_expires_at = NULL
WHERE j.scope = $1 AND j.state = 'running' AND j.lease_expires_at < now()
RETURNING j.id
