-- Insert a batch in one statement: $1 the scope; the batch template below expands the jobs as
-- rows `i` in input order (insert_batch_arrays.sql on the pool, insert_batch_json.sql on a
-- caller's connection).
-- Rows are inserted in that order, so `sequence` (FIFO within a scheduled_at instant) follows
-- it. A job without a time or delay is scheduled at now(): the database clock, never the
-- caller's.
-- `head` (see migration 0003) comes from the placement template: decided here on the pool
-- (insert_placement_pool.sql), left to the next claim on a caller's connection
-- (insert_placement_caller.sql), whose transaction may stay open for long.
-- The one pg_notify wakes the scope's workers; like any NOTIFY it is delivered at COMMIT, so a
-- job inserted in the caller's transaction is announced only once it is visible.
WITH batch AS MATERIALIZED (
    SELECT i.*, coalesce(i.scheduled_at, now() + coalesce(i.delay, 0) * interval '1 second') AS at
    FROM {{batch}}
), placement AS (
{{placement}}
), inserted AS (
    INSERT INTO ferroq_jobs AS j
        (scope, queue, action, params, params_bytes, blocking, priority, state,
         max_attempts, timeout, max_backoff, scheduled_at, run_at, head)
    SELECT $1, b.queue, b.action, b.params::json, b.params_bytes, b.blocking, b.priority,
           CASE WHEN b.at <= now() THEN 'available' ELSE 'scheduled' END,
           b.max_attempts, b.timeout, b.max_backoff, b.at, b.at, placement.head
    FROM batch AS b LEFT JOIN placement ON placement.ord = b.ord
    ORDER BY b.ord
    RETURNING j.*
)
SELECT {{job_columns}}
FROM inserted AS j
CROSS JOIN (SELECT pg_notify('ferroq_jobs', $1) FROM (SELECT count(*) FROM inserted) AS n) AS announced
