-- ferroq schema, version 7: unique jobs.
-- A unique job stores its key (`/key`, or `period:window/key` for a key unique per window of
-- `period` seconds: see UniqueKey in rust/job.rs) and the states in which it blocks another
-- job with that key, as a mask of one bit per state (JobState::unique_bit). The index below
-- holds exactly the rows that block, so the database itself refuses a second one, whichever
-- process inserts it: inserts name it in ON CONFLICT and get the existing row back instead.
-- A row that leaves its states (a job that completes, with the default states) leaves the
-- index, and the key is free again. `duplicates` counts the inserts answered with this row;
-- an insert reads it to tell a row it inserted (0) from one it found.
-- Plain jobs leave the three columns NULL and 0 and are not in the index: they cost nothing
-- but the (NULL) columns. Adding nullable columns and a constant default rewrites no row.
ALTER TABLE ferroq_jobs
    ADD COLUMN unique_key text,
    ADD COLUMN unique_states integer,
    ADD COLUMN duplicates integer NOT NULL DEFAULT 0;

-- CASE over a column is immutable, so it may stand in an index predicate; the insert
-- statements repeat this predicate word for word in ON CONFLICT (insert_unique_jobs.sql).
CREATE UNIQUE INDEX ferroq_jobs_unique_key
    ON ferroq_jobs (scope, unique_key)
    WHERE unique_key IS NOT NULL
      AND (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2
                                      WHEN 'running' THEN 4 WHEN 'retryable' THEN 8
                                      WHEN 'completed' THEN 16 WHEN 'failed' THEN 32
                                      WHEN 'discarded' THEN 64 ELSE 0 END) <> 0;
