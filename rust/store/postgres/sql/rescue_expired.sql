-- A lease nobody renewed means its worker is gone: the job runs again at once. The crashed
-- attempt counts, so a job that kills its worker every time ends as failed instead of looping
-- forever; but the rescuer never writes `failed` itself: a job out of attempts becomes
-- available with its error saying so, and the next worker with its performer claims it, runs
-- only its on_failure hook and writes it failed (see worker/mod.rs). That claim counts an
-- attempt past max_attempts, given back when the failure is written; if that worker dies too,
-- the count goes back here and the first lease-expired error is kept.
-- A job whose cancel was requested while it ran ends discarded instead: it never runs again.
UPDATE ferroq_jobs AS j
SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'discarded' ELSE 'available' END,
    done_at = CASE WHEN j.cancel_requested_at IS NOT NULL THEN now() END,
    error = CASE WHEN j.cancel_requested_at IS NOT NULL
                 THEN {{cancelled_while_running}} || ' (its worker stopped renewing the lease)'
                 WHEN j.attempts > j.max_attempts THEN j.error
                 ELSE 'lease expired: attempt ' || j.attempts || ' by '
                      || coalesce(j.attempted_by, 'unknown worker')
                      || ' stopped renewing its lease (worker killed or stalled)'
                      || CASE WHEN j.attempts >= j.max_attempts
                              THEN '; no attempts left: failing, once a worker with its performer has run its on_failure hook'
                              ELSE '' END
            END,
    attempts = least(j.attempts, j.max_attempts),
    run_at = now(),
    lease_token = NULL,
    lease_expires_at = NULL
WHERE j.scope = $1 AND j.state = 'running' AND j.lease_expires_at < now()
RETURNING j.id
