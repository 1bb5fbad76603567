-- ferroq schema, version 1.
-- One table holds the jobs of every scope; queue, action and scope names are plain data.

CREATE SEQUENCE IF NOT EXISTS ferroq_lease_token_seq;

CREATE TABLE IF NOT EXISTS ferroq_jobs (
    id               bigserial PRIMARY KEY,
    scope            text             NOT NULL,
    queue            text             NOT NULL,
    action           text             NOT NULL,
    params           jsonb            NOT NULL,
    -- A blocking queue runs one job at a time in FIFO order; a concurrent queue runs up to its
    -- limit in priority order. Decided by the creating App's `queues` when the job is inserted.
    blocking         boolean          NOT NULL,
    priority         integer          NOT NULL DEFAULT 0,
    -- FIFO tie-breaker within a scheduled_at instant; assigned at insert, never changed.
    sequence         bigserial        NOT NULL,
    state            text             NOT NULL,
    attempts         integer          NOT NULL DEFAULT 0,
    max_attempts     integer          NOT NULL,
    timeout          double precision NOT NULL,
    max_backoff      double precision NOT NULL,
    scheduled_at     timestamptz      NOT NULL,
    -- When the job may next be claimed: scheduled_at at first, then the retry or snooze time.
    run_at           timestamptz      NOT NULL,
    attempted_at     timestamptz,
    attempted_by     text,
    next_attempt_at  timestamptz,
    done_at          timestamptz,
    inserted_at      timestamptz      NOT NULL DEFAULT now(),
    error            text,
    result           jsonb,
    -- The running attempt's fencing token and lease; NULL unless state = 'running'.
    lease_token      bigint,
    lease_expires_at timestamptz,
    CONSTRAINT ferroq_jobs_state_check CHECK (state IN
        ('scheduled', 'available', 'running', 'retryable', 'completed', 'failed', 'discarded')),
    CONSTRAINT ferroq_jobs_lease_check CHECK ((state = 'running') = (lease_token IS NOT NULL))
);

-- Heads of blocking queues: the first unfinished job of each (scope, queue) in FIFO order.
CREATE INDEX IF NOT EXISTS ferroq_jobs_blocking_fifo
    ON ferroq_jobs (scope, queue, scheduled_at, sequence)
    WHERE blocking AND state IN ('scheduled', 'available', 'running', 'retryable');

-- Ready jobs of concurrent queues in claim order.
CREATE INDEX IF NOT EXISTS ferroq_jobs_concurrent_ready
    ON ferroq_jobs (scope, queue, priority, scheduled_at, sequence)
    WHERE NOT blocking AND state IN ('scheduled', 'available', 'retryable');

-- The schema itself guarantees one running job per blocking queue, whatever a claimer does.
CREATE UNIQUE INDEX IF NOT EXISTS ferroq_jobs_one_running_per_blocking_queue
    ON ferroq_jobs (scope, queue)
    WHERE blocking AND state = 'running';

-- Running jobs: lease rescue and concurrent-queue limits.
CREATE INDEX IF NOT EXISTS ferroq_jobs_running
    ON ferroq_jobs (scope, queue, lease_expires_at)
    WHERE state = 'running';

-- Next wake-up time of an idle worker, and retention cleanup.
CREATE INDEX IF NOT EXISTS ferroq_jobs_waiting_run_at
    ON ferroq_jobs (scope, run_at)
    WHERE state IN ('scheduled', 'retryable');
CREATE INDEX IF NOT EXISTS ferroq_jobs_done_at
    ON ferroq_jobs (scope, done_at)
    WHERE done_at IS NOT NULL;

-- Wake-ups: one NOTIFY per scope per inserting statement, delivered at COMMIT, so a job
-- enqueued inside the caller's transaction is announced only once it is visible. The payload
-- is the scope name only; listeners treat it as a hint and re-read the table.
CREATE OR REPLACE FUNCTION ferroq_notify_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferroq_jobs', scope) FROM (SELECT DISTINCT scope FROM ferroq_inserted_jobs) AS s;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS ferroq_jobs_notify_insert ON ferroq_jobs;
CREATE TRIGGER ferroq_jobs_notify_insert
    AFTER INSERT ON ferroq_jobs
    REFERENCING NEW TABLE AS ferroq_inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ferroq_notify_inserted_jobs();
