-- Insert a batch in one statement: $1 the scope, $2 the batch as a JSON array with one array
-- per job (see store/encode.rs). Rows are inserted in array order, so `sequence` (FIFO within a
-- scheduled_at instant) follows it. A job without a time or delay is scheduled at now(): the
-- database clock, never the caller's.
-- The one pg_notify wakes the scope's workers; like any NOTIFY it is delivered at COMMIT, so a
-- job inserted in the caller's transaction is announced only once it is visible.
-- The same text runs on a caller's connection (caller_insert), returning each row as JSON:
-- $2 is declared text so that every driver binds it as a plain string.
WITH inserted AS (
    INSERT INTO ferroq_jobs AS j
        (scope, queue, action, params, blocking, priority, state,
         max_attempts, timeout, max_backoff, scheduled_at, run_at)
    SELECT $1, b.job ->> 0, b.job ->> 1, (b.job ->> 2)::jsonb, (b.job ->> 3)::bool,
           (b.job ->> 4)::int4,
           CASE WHEN t.at <= now() THEN 'available' ELSE 'scheduled' END,
           (b.job ->> 5)::int4, (b.job ->> 6)::float8, (b.job ->> 7)::float8, t.at, t.at
    FROM jsonb_array_elements($2::text::jsonb) WITH ORDINALITY AS b(job, ord)
    CROSS JOIN LATERAL (
        SELECT coalesce(timestamptz 'epoch' + (b.job ->> 8)::int8 * interval '1 microsecond',
                        now() + coalesce((b.job ->> 9)::float8, 0) * interval '1 second') AS at
    ) AS t
    ORDER BY b.ord
    RETURNING j.*
)
SELECT {{job_columns}}
FROM inserted AS j
CROSS JOIN (SELECT pg_notify('ferroq_jobs', $1) FROM (SELECT count(*) FROM inserted) AS n) AS announced
