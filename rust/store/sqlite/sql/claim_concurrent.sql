-- Claim ready jobs of one concurrent queue in priority, then FIFO order, within what its limit
-- leaves free. Runs inside BEGIN IMMEDIATE, so the running count cannot change underneath.
-- ?7: a JSON array of the actions the worker has performers for (NULL: any).
UPDATE ferroq_jobs
SET state = 'running',
    attempts = attempts + 1,
    attempted_at = {{now}},
    attempted_by = ?4,
    next_attempt_at = NULL,
    lease_token = abs(random()),
    lease_expires_at = {{now}} + CAST(?5 * 1000000 AS INTEGER)
WHERE id IN (
    SELECT r.id FROM ferroq_jobs AS r
    WHERE r.scope = ?1 AND r.queue = ?2 AND NOT r.blocking
      AND r.state IN ('scheduled', 'available', 'retryable') AND r.run_at <= {{now}}
      AND (?7 IS NULL OR r.action IN (SELECT value FROM json_each(?7)))
    ORDER BY r.priority, r.scheduled_at, r.id
    LIMIT max(0, min(?3, ?6 - (SELECT count(*) FROM ferroq_jobs AS c
                               WHERE c.scope = ?1 AND c.queue = ?2 AND NOT c.blocking
                                 AND c.state = 'running')))
)
RETURNING {{job_columns}}
