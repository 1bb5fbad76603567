-- ferroq schema, version 1 (SQLite; numbered in lock-step with migrations/postgres).
-- Times are integer microseconds since the Unix epoch (UTC), stamped by SQLite's own clock.
-- FIFO order uses id, which AUTOINCREMENT never reuses (PostgreSQL has a separate sequence).

CREATE TABLE IF NOT EXISTS ferroq_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    scope            TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    action           TEXT    NOT NULL,
    params           TEXT    NOT NULL CHECK (json_valid(params)),
    blocking         INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL CHECK (state IN
        ('scheduled', 'available', 'running', 'retryable', 'completed', 'failed', 'discarded')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL    NOT NULL,
    max_backoff      REAL    NOT NULL,
    scheduled_at     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempted_at     INTEGER,
    attempted_by     TEXT,
    next_attempt_at  INTEGER,
    done_at          INTEGER,
    inserted_at      INTEGER NOT NULL,
    error            TEXT,
    result           TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    CHECK ((state = 'running') = (lease_token IS NOT NULL))
) STRICT;

CREATE INDEX IF NOT EXISTS ferroq_jobs_blocking_fifo
    ON ferroq_jobs (scope, queue, scheduled_at, id)
    WHERE blocking AND state IN ('scheduled', 'available', 'running', 'retryable');

CREATE INDEX IF NOT EXISTS ferroq_jobs_concurrent_ready
    ON ferroq_jobs (scope, queue, priority, scheduled_at, id)
    WHERE NOT blocking AND state IN ('scheduled', 'available', 'retryable');

CREATE UNIQUE INDEX IF NOT EXISTS ferroq_jobs_one_running_per_blocking_queue
    ON ferroq_jobs (scope, queue)
    WHERE blocking AND state = 'running';

CREATE INDEX IF NOT EXISTS ferroq_jobs_running
    ON ferroq_jobs (scope, queue, lease_expires_at)
    WHERE state = 'running';

CREATE INDEX IF NOT EXISTS ferroq_jobs_waiting_run_at
    ON ferroq_jobs (scope, run_at)
    WHERE state IN ('scheduled', 'retryable');

CREATE INDEX IF NOT EXISTS ferroq_jobs_done_at
    ON ferroq_jobs (scope, done_at)
    WHERE done_at IS NOT NULL;
