-- Insert a batch in one statement. Each input row is an element of parallel arrays; rows are
-- inserted in input order so `sequence` (FIFO within a scheduled_at instant) follows it.
-- A job without a time or delay is scheduled at now(): the database clock, never the caller's.
-- The one pg_notify wakes the scope's workers; like any NOTIFY it is delivered at COMMIT, so a
-- job inserted in the caller's transaction is announced only once it is visible.
WITH inserted AS (
    INSERT INTO ferroq_jobs AS j
        (scope, queue, action, params, blocking, priority, state,
         max_attempts, timeout, max_backoff, scheduled_at, run_at)
    SELECT $1, i.queue, i.action, i.params::jsonb, i.blocking, i.priority,
           CASE WHEN t.at <= now() THEN 'available' ELSE 'scheduled' END,
           i.max_attempts, i.timeout, i.max_backoff, t.at, t.at
    FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[], $6::int4[], $7::int4[],
                $8::float8[], $9::float8[], $10::timestamptz[], $11::float8[])
         WITH ORDINALITY AS i(queue, action, params, blocking, priority, max_attempts,
                              timeout, max_backoff, scheduled_at, delay, ord)
    CROSS JOIN LATERAL (
        SELECT coalesce(i.scheduled_at, now() + coalesce(i.delay, 0) * interval '1 second') AS at
    ) AS t
    ORDER BY i.ord
    RETURNING {{job_columns}}
)
SELECT inserted.*
FROM inserted
-- The scope is read back from the rows rather than bound twice: the drivers of callers bind each
-- placeholder once, in order (see to_pyformat).
CROSS JOIN (SELECT pg_notify('ferroq_jobs', min(scope)) FROM inserted) AS announced
