-- insert_jobs.sql for a batch with unique jobs (migration 0007), on the pool and on a
-- caller's connection alike: $1 the scope, the batch template expands the jobs as rows `i`
-- with three more columns (unique_key, unique_period, unique_states; NULL for a plain job).
-- The stored key is built here, on the database clock: `/key`, or `period:window/key` where
-- window counts whole periods since the epoch (UniqueKey in rust/job.rs reads it back). Keys
-- repeated within the batch were sent once (job::distinct_unique).
-- ON CONFLICT names the unique index by its predicate, word for word. DO UPDATE (not DO
-- NOTHING) is what returns the existing row in this same statement, even one another
-- transaction committed after this statement's snapshot was taken: the conflict waits for
-- that transaction, locks the row it inserted and returns its latest version. Should that row
-- leave its unique states meanwhile (completed), it left the index, and PostgreSQL inserts
-- this job after all. The update only counts the answer (`duplicates`), which tells the
-- caller which rows were there before (> 0) from the ones inserted now (0).
-- Blocking jobs are left unplaced (head NULL, decided by the next claim, as on a caller's
-- connection): the pool placement ranks a batch's jobs of a queue behind its first, which
-- here may be a duplicate that is not inserted.
WITH batch AS MATERIALIZED (
    SELECT i.*, coalesce(i.scheduled_at, now() + coalesce(i.delay, 0) * interval '1 second') AS at
    FROM {{batch}}
), inserted AS (
    INSERT INTO ferroq_jobs AS j
        (scope, queue, action, params, params_bytes, blocking, priority, state,
         max_attempts, timeout, max_backoff, scheduled_at, run_at, head, unique_key, unique_states)
    SELECT $1, b.queue, b.action, b.params::json, b.params_bytes, b.blocking, b.priority,
           CASE WHEN b.at <= now() THEN 'available' ELSE 'scheduled' END,
           b.max_attempts, b.timeout, b.max_backoff, b.at, b.at, NULL::boolean,
           CASE WHEN b.unique_period IS NULL THEN '/' || b.unique_key
                ELSE b.unique_period::text || ':'
                     || floor(extract(epoch FROM now()) / b.unique_period)::int8::text
                     || '/' || b.unique_key
           END,
           b.unique_states
    FROM batch AS b
    ORDER BY b.ord
    ON CONFLICT (scope, unique_key)
        WHERE unique_key IS NOT NULL
          AND (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2
                                          WHEN 'running' THEN 4 WHEN 'retryable' THEN 8
                                          WHEN 'completed' THEN 16 WHEN 'failed' THEN 32
                                          WHEN 'discarded' THEN 64 ELSE 0 END) <> 0
    DO UPDATE SET duplicates = j.duplicates + 1
    RETURNING j.*
)
SELECT {{job_columns}}
FROM inserted AS j
CROSS JOIN (SELECT pg_notify('ferroq_jobs', $1) FROM (SELECT count(*) FROM inserted) AS n) AS announced
