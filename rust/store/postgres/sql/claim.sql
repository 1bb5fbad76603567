-- Claim up to $4 jobs in one statement: first ready jobs of the concurrent queues, then heads
-- of blocking queues for what is left. Parameters: $1 scope, $2/$3 the concurrent queues and
-- their caps (empty arrays when there are none), $4 the batch size, $5 the worker's name,
-- $6 the lease in seconds, $7 the actions the worker has performers for (NULL: any). Runs
-- after lock_concurrent_queues.sql in the same transaction.
WITH RECURSIVE caps AS (
    -- Concurrent queues: each within its limit of running jobs across all workers (the
    -- running count cannot be raced past: claimers of a queue are serialized by its lock).
    SELECT q.queue,
           q.cap - (SELECT count(*) FROM ferroq_jobs AS r
                    WHERE r.scope = $1 AND r.queue = q.queue AND NOT r.blocking
                      AND r.state = 'running') AS free
    FROM unnest($2::text[], $3::int8[]) AS q(queue, cap)
), concurrent_candidates AS (
    -- In priority, then FIFO order; each queue locks no more rows than the batch can take.
    SELECT c.id, c.priority, c.scheduled_at, c.sequence
    FROM caps CROSS JOIN LATERAL (
        SELECT r.id, r.priority, r.scheduled_at, r.sequence
        FROM ferroq_jobs AS r
        WHERE r.scope = $1 AND r.queue = caps.queue AND NOT r.blocking
          AND r.state IN ('scheduled', 'available', 'retryable') AND r.run_at <= now()
          AND ($7::text[] IS NULL OR r.action = ANY($7))
        ORDER BY r.priority, r.scheduled_at, r.sequence
        LIMIT least(greatest(caps.free, 0), $4)
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
    ORDER BY c.priority, c.scheduled_at, c.sequence
    LIMIT $4
), heads(id, queue, action, state, run_at, priority, scheduled_at, sequence) AS (
    -- Blocking queues: per (scope, queue) only the first unfinished job in (scheduled_at,
    -- sequence) order may run, and only if it is due and no job of the queue runs. A retrying
    -- head keeps its place, so a failing job blocks its queue.
    -- The heads are found by walking the ferroq_jobs_blocking_fifo index one queue at a
    -- time: the first entry after the previous queue is the next queue's head. One index
    -- descent per queue, however many jobs wait behind each head.
    (SELECT h.id, h.queue, h.action, h.state, h.run_at, h.priority, h.scheduled_at, h.sequence
     FROM ferroq_jobs AS h
     WHERE h.scope = $1 AND h.blocking
       AND h.state IN ('scheduled', 'available', 'running', 'retryable')
     ORDER BY h.queue, h.scheduled_at, h.sequence
     LIMIT 1)
    UNION ALL
    SELECT next_head.*
    FROM heads AS previous CROSS JOIN LATERAL (
        SELECT h.id, h.queue, h.action, h.state, h.run_at, h.priority, h.scheduled_at, h.sequence
        FROM ferroq_jobs AS h
        WHERE h.scope = $1 AND h.blocking
          AND h.state IN ('scheduled', 'available', 'running', 'retryable')
          AND h.queue > previous.queue
        ORDER BY h.queue, h.scheduled_at, h.sequence
        LIMIT 1
    ) AS next_head
), ready_heads AS (
    SELECT heads.id, heads.priority, heads.scheduled_at, heads.sequence
    FROM heads
    -- A head of an action the worker does not serve is skipped, and holds its queue.
    WHERE heads.state <> 'running' AND heads.run_at <= now()
      AND ($7::text[] IS NULL OR heads.action = ANY($7))
    ORDER BY heads.priority, heads.scheduled_at, heads.sequence
    LIMIT greatest($4 - (SELECT count(*) FROM concurrent_candidates), 0)
), locked_heads AS (
    -- The row lock re-checks the state (SKIP LOCKED + READ COMMITTED re-evaluation), and the
    -- unique index ferroq_jobs_one_running_per_blocking_queue backs the rule up in the schema.
    SELECT c.id
    FROM ferroq_jobs AS c JOIN ready_heads ON ready_heads.id = c.id
    WHERE c.state IN ('scheduled', 'available', 'retryable') AND c.run_at <= now()
    FOR UPDATE OF c SKIP LOCKED
), claimable AS (
    SELECT id FROM concurrent_candidates
    UNION ALL
    SELECT id FROM locked_heads
)
UPDATE ferroq_jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    attempted_at = now(),
    attempted_by = $5,
    next_attempt_at = NULL,
    lease_token = nextval('ferroq_lease_token_seq'),
    lease_expires_at = now() + $6 * interval '1 second'
FROM claimable
WHERE j.id = claimable.id
RETURNING {{job_columns}}
