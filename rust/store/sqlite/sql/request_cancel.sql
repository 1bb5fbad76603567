-- Ask the worker running a job to cancel it (?1 scope, ?2 id); see the PostgreSQL twin. The
-- commit itself tells other processes' workers (their watchers see the file change).
UPDATE ferroq_jobs
SET cancel_requested_at = coalesce(cancel_requested_at, {{now}})
WHERE scope = ?1 AND id = ?2 AND state = 'running'
RETURNING {{job_columns}}
