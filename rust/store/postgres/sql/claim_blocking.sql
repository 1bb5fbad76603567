-- Claim the heads of blocking queues: per (scope, queue) only the first unfinished job in
-- (scheduled_at, sequence) order may run, and only if it is due and no job of the queue runs.
-- A retrying head keeps its place, so a failing job blocks its queue. The row lock re-checks
-- the state (SKIP LOCKED + READ COMMITTED re-evaluation), and the unique index
-- ferroq_jobs_one_running_per_blocking_queue backs the rule up in the schema.
WITH heads AS (
    SELECT DISTINCT ON (h.queue) h.id, h.state, h.run_at, h.priority, h.scheduled_at, h.sequence
    FROM ferroq_jobs AS h
    WHERE h.scope = $1 AND h.blocking
      AND h.state IN ('scheduled', 'available', 'running', 'retryable')
    ORDER BY h.queue, h.scheduled_at, h.sequence
), ready AS (
    SELECT heads.id, heads.priority, heads.scheduled_at, heads.sequence
    FROM heads
    WHERE heads.state <> 'running' AND heads.run_at <= now()
    ORDER BY heads.priority, heads.scheduled_at, heads.sequence
    LIMIT $2
), locked AS (
    SELECT c.id
    FROM ferroq_jobs AS c JOIN ready ON ready.id = c.id
    WHERE c.state IN ('scheduled', 'available', 'retryable') AND c.run_at <= now()
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE ferroq_jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    attempted_at = now(),
    attempted_by = $3,
    next_attempt_at = NULL,
    lease_token = nextval('ferroq_lease_token_seq'),
    lease_expires_at = now() + $4 * interval '1 second'
FROM locked
WHERE j.id = locked.id
RETURNING {{job_columns}}
