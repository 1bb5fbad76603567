-- One job (the store inserts a batch inside one transaction). A job without a time or delay
-- is scheduled at the database's now.
INSERT INTO ferroq_jobs
    (scope, queue, action, params, blocking, priority, state, max_attempts, timeout,
     max_backoff, scheduled_at, run_at, inserted_at)
SELECT ?1, ?2, ?3, json(?4), ?5, ?6,
       CASE WHEN t.at <= t.now THEN 'available' ELSE 'scheduled' END,
       ?7, ?8, ?9, t.at, t.at, t.now
FROM (SELECT coalesce(?10, {{now}} + CAST(coalesce(?11, 0) * 1000000 AS INTEGER)) AS at, {{now}} AS now) AS t
RETURNING {{job_columns}}
