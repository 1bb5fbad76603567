-- See the PostgreSQL twin: the crashed attempt counts, and a job out of attempts comes back
-- available for a worker with its performer to run its on_failure hook and fail it.
-- A job whose cancel was requested while it ran ends discarded instead: it never runs again.
UPDATE ferroq_jobs
SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'discarded' ELSE 'available' END,
    done_at = CASE WHEN cancel_requested_at IS NOT NULL THEN {{now}} END,
    error = CASE WHEN cancel_requested_at IS NOT NULL
                 THEN {{cancelled_while_running}} || ' (its worker stopped renewing the lease)'
                 WHEN attempts > max_attempts THEN error
                 ELSE 'lease expired: attempt ' || attempts || ' by '
                      || coalesce(attempted_by, 'unknown worker')
                      || ' stopped renewing its lease (worker killed or stalled)'
                      || CASE WHEN attempts >= max_attempts
                              THEN '; no attempts left: failing, once a worker with its performer has run its on_failure hook'
                              ELSE '' END
            END,
    attempts = min(attempts, max_attempts),
    run_at = {{now}},
    lease_token = NULL,
    lease_expires_at = NULL
WHERE scope = ?1 AND state = 'running' AND lease_expires_at < {{now}}
RETURNING id
