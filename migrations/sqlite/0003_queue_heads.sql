-- ferroq schema, version 3 (see the PostgreSQL twin): each blocking queue marks its head, so a
-- claim reads the ready heads as one index range instead of walking every queue; a head's
-- run_at is its turn. Concurrent queues remember when a claim last served them.
ALTER TABLE ferroq_jobs ADD COLUMN head INTEGER;

CREATE INDEX IF NOT EXISTS ferroq_jobs_ready_heads
    ON ferroq_jobs (scope, run_at, id)
    WHERE blocking AND head AND state IN ('scheduled', 'available', 'retryable');

CREATE INDEX IF NOT EXISTS ferroq_jobs_unresolved_heads
    ON ferroq_jobs (scope, id)
    WHERE blocking AND head IS NULL AND state IN ('scheduled', 'available', 'running', 'retryable');

CREATE TABLE IF NOT EXISTS ferroq_queue_turns (
    scope     TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    served_at INTEGER NOT NULL,
    PRIMARY KEY (scope, queue)
) STRICT;
