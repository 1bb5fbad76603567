-- Ask the worker running a job to cancel it ($1 scope, $2 id): its worker interrupts the
-- performer and writes the job discarded. A second request keeps the first one's time.
UPDATE ferroq_jobs AS j
SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
WHERE j.scope = $1 AND j.id = $2 AND j.state = 'running'
RETURNING {{job_columns}}
