-- ferroq schema, version 7: unique jobs (see the PostgreSQL twin for the rule). SQLite allows
-- deterministic expressions such as CASE in a partial index's WHERE; the insert statements
-- repeat it word for word in ON CONFLICT (insert_unique_jobs.sql).
ALTER TABLE ferroq_jobs ADD COLUMN unique_key TEXT;
ALTER TABLE ferroq_jobs ADD COLUMN unique_states INTEGER;
ALTER TABLE ferroq_jobs ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX ferroq_jobs_unique_key
    ON ferroq_jobs (scope, unique_key)
    WHERE unique_key IS NOT NULL
      AND (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2
                                      WHEN 'running' THEN 4 WHEN 'retryable' THEN 8
                                      WHEN 'completed' THEN 16 WHEN 'failed' THEN 32
                                      WHEN 'discarded' THEN 64 ELSE 0 END) <> 0;
