-- ferroq schema, version 6: periodic (cron) entries. One row per entry and scope: the latest
-- tick enqueued for it. A worker enqueues tick T only by moving last_tick forward to T in the
-- same transaction as the job's insert (enqueue_tick.sql), so each tick is inserted once
-- across all workers and restarts, with no leader: this row is the arbiter.
CREATE TABLE IF NOT EXISTS ferroq_periodic (
    scope text NOT NULL,
    name text NOT NULL,
    last_tick timestamptz NOT NULL,
    PRIMARY KEY (scope, name)
);
