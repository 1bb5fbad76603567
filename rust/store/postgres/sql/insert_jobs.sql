-- Insert a batch in one statement: $1 the scope; the batch template below expands the jobs as
-- rows `i` in input order (insert_batch_arrays.sql on the pool, insert_batch_json.sql on a
-- caller's connection).
-- Rows are inserted in that order, so `sequence` (FIFO within a scheduled_at instant) follows
-- it. A job without a time or delay is scheduled at now(): the database clock, never the
-- caller's.
-- The one pg_notify wakes the scope's workers; like any NOTIFY it is delivered at COMMIT, so a
-- job inserted in the caller's transaction is announced only once it is visible.
WITH inserted AS (
    INSERT INTO ferroq_jobs AS j
        (scope, queue, action, params, params_bytes, blocking, priority, state,
         max_attempts, timeout, max_backoff, scheduled_at, run_at)
    SELECT $1, i.queue, i.action, i.params::jsonb, i.params_bytes, i.blocking, i.priority,
           CASE WHEN t.at <= now() THEN 'available' ELSE 'scheduled' END,
           i.max_attempts, i.timeout, i.max_backoff, t.at, t.at
    FROM {{batch}}
    CROSS JOIN LATERAL (
        SELECT coalesce(i.scheduled_at, now() + coalesce(i.delay, 0) * interval '1 second') AS at
    ) AS t
    ORDER BY i.ord
    RETURNING j.*
)
SELECT {{job_columns}}
FROM inserted AS j
CROSS JOIN (SELECT pg_notify('ferroq_jobs', $1) FROM (SELECT count(*) FROM inserted) AS n) AS announced
