-- A batch in one statement (one call into SQLite instead of one per job): ?1 the scope, ?2 the
-- batch as a JSON array with one array per job, ?3 the batch's params end to end (JSON text as
-- UTF-8, bytes as given), which each job's entry slices by offset (from 0) and length (see
-- store/encode.rs): a large payload stays out of the array, which every json_extract below
-- would otherwise copy and parse again. Rows are inserted in array order, so their ids (the
-- FIFO order) follow it. A job without a time or delay is scheduled at the database's now.
-- The same text runs on a caller's connection (caller_insert), returning each row as JSON.
-- `head` (see migration 0003) is decided here, on the pool and on a caller's connection alike:
-- the writer holds SQLite's one write lock until it commits, so no job can finish in between.
-- A blocking job is its queue's head when no unfinished job of its queue is scheduled before
-- or at its time and it is the first of its queue in this batch.
INSERT INTO ferroq_jobs
    (scope, queue, action, params, params_bytes, blocking, priority, state, max_attempts,
     timeout, max_backoff, scheduled_at, run_at, inserted_at, head)
SELECT ?1, json_extract(t.job, '$[0]'), json_extract(t.job, '$[1]'),
       -- substr() counts bytes in a BLOB; it gives NULL, not x'', for a slice of an empty BLOB
       -- (JSON text is never empty). A bytes job stores JSON null in params.
       CASE WHEN json_extract(t.job, '$[2]')
            THEN CAST(substr(?3, json_extract(t.job, '$[10]') + 1, json_extract(t.job, '$[11]')) AS TEXT)
            ELSE 'null'
       END,
       CASE WHEN NOT json_extract(t.job, '$[2]')
            THEN coalesce(substr(?3, json_extract(t.job, '$[10]') + 1, json_extract(t.job, '$[11]')), x'')
       END,
       json_extract(t.job, '$[3]'),
       json_extract(t.job, '$[4]'),
       CASE WHEN t.at <= t.now THEN 'available' ELSE 'scheduled' END,
       json_extract(t.job, '$[5]'), json_extract(t.job, '$[6]'), json_extract(t.job, '$[7]'),
       t.at, t.at, t.now,
       CASE WHEN NOT json_extract(t.job, '$[3]') THEN NULL
            WHEN t.rank_in_queue > 1 THEN 0
            WHEN EXISTS (SELECT 1 FROM ferroq_jobs AS p
                         WHERE p.scope = ?1 AND p.blocking AND p.queue = json_extract(t.job, '$[0]')
                           AND p.state IN ('scheduled', 'available', 'running', 'retryable')
                           AND p.scheduled_at <= t.at) THEN 0
            ELSE 1
       END
FROM (
    -- The window runs here, over the entries alone: a window materialises the rows it reads,
    -- and at the outer level those would carry every job's params, copied several times over.
    SELECT s.*, row_number() OVER (PARTITION BY json_extract(s.job, '$[0]'), json_extract(s.job, '$[3]')
                                   ORDER BY s.at, s.position) AS rank_in_queue
    FROM (
        SELECT j.key AS position, j.value AS job, n.now,
               coalesce(json_extract(j.value, '$[8]'),
                        n.now + CAST(coalesce(json_extract(j.value, '$[9]'), 0) * 1000000 AS INTEGER)) AS at
        FROM json_each(?2) AS j, (SELECT {{now}} AS now) AS n
    ) AS s
    -- The rows come out of this subquery in array order, and the outer SELECT (no ORDER BY of
    -- its own, one source) inserts them as they come: a sort out there would hold every job's
    -- params once more. LIMIT -1 (no limit) keeps SQLite from flattening the subquery into
    -- the outer SELECT or omitting its ORDER BY.
    ORDER BY s.position
    LIMIT -1
) AS t
RETURNING {{job_columns}}
