-- Claim the heads of blocking queues (see the PostgreSQL twin). Runs inside BEGIN IMMEDIATE,
-- which makes this process the only writer: no row locks are needed.
WITH heads AS (
    SELECT h.id, h.state, h.run_at, h.priority, h.scheduled_at,
           row_number() OVER (PARTITION BY h.queue ORDER BY h.scheduled_at, h.id) AS position
    FROM ferroq_jobs AS h
    WHERE h.scope = ?1 AND h.blocking
      AND h.state IN ('scheduled', 'available', 'running', 'retryable')
)
UPDATE ferroq_jobs
SET state = 'running',
    attempts = attempts + 1,
    attempted_at = {{now}},
    attempted_by = ?3,
    next_attempt_at = NULL,
    lease_token = abs(random()),
    lease_expires_at = {{now}} + CAST(?4 * 1000000 AS INTEGER)
WHERE id IN (
    SELECT heads.id FROM heads
    WHERE heads.position = 1 AND heads.state <> 'running' AND heads.run_at <= {{now}}
    ORDER BY heads.priority, heads.scheduled_at, heads.id
    LIMIT ?2
)
RETURNING {{job_columns}}
