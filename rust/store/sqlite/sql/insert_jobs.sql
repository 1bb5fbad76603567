-- A batch in one statement (one call into SQLite instead of one per job): ?1 the scope, ?2 the
-- batch as a JSON array with one array per job, ?3 the batch's bytes params end to end, which
-- a bytes job's entry slices by offset (from 0) and length (see store/encode.rs). Rows are inserted in
-- array order, so their ids (the FIFO order) follow it. A job without a time or delay is
-- scheduled at the database's now. The same text runs on a caller's connection
-- (caller_insert), returning each row as JSON.
-- `head` (see migration 0003) is decided here, on the pool and on a caller's connection alike:
-- the writer holds SQLite's one write lock until it commits, so no job can finish in between.
-- A blocking job is its queue's head when no unfinished job of its queue is scheduled before
-- or at its time and it is the first of its queue in this batch.
INSERT INTO ferroq_jobs
    (scope, queue, action, params, params_bytes, blocking, priority, state, max_attempts,
     timeout, max_backoff, scheduled_at, run_at, inserted_at, head)
SELECT ?1, json_extract(t.job, '$[0]'), json_extract(t.job, '$[1]'),
       json(json_extract(t.job, '$[2]')),
       -- substr() counts bytes in a BLOB; it gives NULL, not x'', for a slice of an empty BLOB.
       CASE WHEN json_extract(t.job, '$[10]') IS NOT NULL
            THEN coalesce(substr(?3, json_extract(t.job, '$[10]') + 1, json_extract(t.job, '$[11]')), x'')
       END,
       json_extract(t.job, '$[3]'),
       json_extract(t.job, '$[4]'),
       CASE WHEN t.at <= t.now THEN 'available' ELSE 'scheduled' END,
       json_extract(t.job, '$[5]'), json_extract(t.job, '$[6]'), json_extract(t.job, '$[7]'),
       t.at, t.at, t.now,
       CASE WHEN NOT json_extract(t.job, '$[3]') THEN NULL
            WHEN row_number() OVER (PARTITION BY json_extract(t.job, '$[0]'), json_extract(t.job, '$[3]')
                                    ORDER BY t.at, t.position) > 1 THEN 0
            WHEN EXISTS (SELECT 1 FROM ferroq_jobs AS p
                         WHERE p.scope = ?1 AND p.blocking AND p.queue = json_extract(t.job, '$[0]')
                           AND p.state IN ('scheduled', 'available', 'running', 'retryable')
                           AND p.scheduled_at <= t.at) THEN 0
            ELSE 1
       END
FROM (
    SELECT j.key AS position, j.value AS job, n.now,
           coalesce(json_extract(j.value, '$[8]'),
                    n.now + CAST(coalesce(json_extract(j.value, '$[9]'), 0) * 1000000 AS INTEGER)) AS at
    FROM json_each(?2) AS j, (SELECT {{now}} AS now) AS n
) AS t
ORDER BY t.position
RETURNING {{job_columns}}
