-- See the PostgreSQL twin: the crashed attempt counts, so a job that kills its worker ends failed.
UPDATE ferroq_jobs
SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'available' END,
    error = 'lease expired: attempt ' || attempts || ' by ' || coalesce(attempted_by, 'unknown worker')
            || ' stopped renewing its lease (worker killed or stalled)',
    done_at = CASE WHEN attempts >= max_attempts THEN {{now}} END,
    run_at = {{now}},
    lease_token = NULL,
    lease_expires_at = NULL
WHERE scope = ?1 AND state = 'running' AND lease_expires_at < {{now}}
RETURNING id
