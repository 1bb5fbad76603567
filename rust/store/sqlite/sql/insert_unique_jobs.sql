-- insert_jobs.sql for a batch with unique jobs (migration 0007), on the pool, the enqueue
-- connection (direct.rs) and a caller's connection alike: the same parameters, each entry of
-- ?2 with three more values: [12] the unique key, [13] its period in whole seconds, [14] its
-- states mask (null for a plain job). The stored key is built here, on the database clock:
-- `/key`, or `period:window/key` where window counts whole periods since the epoch (UniqueKey
-- in rust/job.rs reads it back). Keys repeated within the batch were sent once.
-- ON CONFLICT names the unique index by its predicate, word for word; DO UPDATE returns the
-- existing row instead of inserting, and counts the answer (`duplicates`), which tells the
-- caller which rows were there before (> 0) from the ones inserted now (0). The writer holds
-- SQLite's one write lock, so no other process changes the row in between.
-- Blocking jobs are left unplaced (head NULL, decided by the next claim): insert_jobs.sql
-- ranks a batch's jobs of a queue behind its first, which here may be a duplicate.
-- `WHERE true` tells SQLite's parser that ON CONFLICT starts the upsert, not a join's ON.
INSERT INTO ferroq_jobs
    (scope, queue, action, params, params_bytes, blocking, priority, state, max_attempts,
     timeout, max_backoff, scheduled_at, run_at, inserted_at, head, unique_key, unique_states)
SELECT ?1, json_extract(t.job, '$[0]'), json_extract(t.job, '$[1]'),
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
       t.at, t.at, t.now, NULL,
       CASE WHEN json_extract(t.job, '$[13]') IS NULL THEN '/' || json_extract(t.job, '$[12]')
            ELSE json_extract(t.job, '$[13]') || ':'
                 || (t.now / (json_extract(t.job, '$[13]') * 1000000)) || '/'
                 || json_extract(t.job, '$[12]')
       END,
       json_extract(t.job, '$[14]')
FROM (
    SELECT j.key AS position, j.value AS job, n.now,
           coalesce(json_extract(j.value, '$[8]'),
                    n.now + CAST(coalesce(json_extract(j.value, '$[9]'), 0) * 1000000 AS INTEGER)) AS at
    FROM json_each(?2) AS j, (SELECT {{now}} AS now) AS n
    -- Inserted in array order (see insert_jobs.sql), so plain jobs' ids follow it.
    ORDER BY j.key
    LIMIT -1
) AS t
WHERE true
ON CONFLICT (scope, unique_key)
    WHERE unique_key IS NOT NULL
      AND (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2
                                      WHEN 'running' THEN 4 WHEN 'retryable' THEN 8
                                      WHEN 'completed' THEN 16 WHEN 'failed' THEN 32
                                      WHEN 'discarded' THEN 64 ELSE 0 END) <> 0
DO UPDATE SET duplicates = duplicates + 1
RETURNING {{job_columns}}
