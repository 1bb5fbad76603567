-- Claim the heads of blocking queues (see the PostgreSQL twin). Runs inside BEGIN IMMEDIATE,
-- which makes this process the only writer: no row locks are needed.
-- The heads are found by walking the ferroq_jobs_blocking_fifo index one queue at a time:
-- the first entry after the previous queue is the next queue's head, so a claim costs one
-- index search per queue, however many jobs wait behind each head.
WITH RECURSIVE heads(id, queue, action, state, run_at, priority, scheduled_at) AS (
    SELECT * FROM (
        SELECT h.id, h.queue, h.action, h.state, h.run_at, h.priority, h.scheduled_at
        FROM ferroq_jobs AS h
        WHERE h.scope = ?1 AND h.blocking
          AND h.state IN ('scheduled', 'available', 'running', 'retryable')
        ORDER BY h.queue, h.scheduled_at, h.id
        LIMIT 1
    )
    UNION ALL
    SELECT n.id, n.queue, n.action, n.state, n.run_at, n.priority, n.scheduled_at
    FROM heads AS previous
    JOIN ferroq_jobs AS n ON n.id = (
        SELECT h.id
        FROM ferroq_jobs AS h
        WHERE h.scope = ?1 AND h.blocking
          AND h.state IN ('scheduled', 'available', 'running', 'retryable')
          AND h.queue > previous.queue
        ORDER BY h.queue, h.scheduled_at, h.id
        LIMIT 1
    )
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
    WHERE heads.state <> 'running' AND heads.run_at <= {{now}}
      -- ?5: the actions the worker serves (NULL: any); another action's head holds its queue.
      AND (?5 IS NULL OR heads.action IN (SELECT value FROM json_each(?5)))
    ORDER BY heads.priority, heads.scheduled_at, heads.id
    LIMIT ?2
)
RETURNING {{job_columns}}
