-- Claim ready jobs of concurrent queues in priority, then FIFO order, each queue within its
-- limit of running jobs across all workers (serialized by lock_concurrent_queues.sql).
WITH caps AS (
    SELECT q.queue,
           q.cap - (SELECT count(*) FROM ferroq_jobs AS r
                    WHERE r.scope = $1 AND r.queue = q.queue AND NOT r.blocking
                      AND r.state = 'running') AS free
    FROM unnest($2::text[], $3::int8[]) AS q(queue, cap)
), candidates AS (
    SELECT c.id, c.priority, c.scheduled_at, c.sequence
    FROM caps CROSS JOIN LATERAL (
        SELECT r.id, r.priority, r.scheduled_at, r.sequence
        FROM ferroq_jobs AS r
        WHERE r.scope = $1 AND r.queue = caps.queue AND NOT r.blocking
          AND r.state IN ('scheduled', 'available', 'retryable') AND r.run_at <= now()
        ORDER BY r.priority, r.scheduled_at, r.sequence
        LIMIT least(greatest(caps.free, 0), $4)
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
    ORDER BY c.priority, c.scheduled_at, c.sequence
    LIMIT $4
)
UPDATE ferroq_jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    attempted_at = now(),
    attempted_by = $5,
    next_attempt_at = NULL,
    lease_token = nextval('ferroq_lease_token_seq'),
    lease_expires_at = now() + $6 * interval '1 second'
FROM candidates
WHERE j.id = candidates.id
RETURNING {{job_columns}}
