-- ferroq schema, version 8 (see the PostgreSQL twin): paused queues, and cancel requests of
-- running jobs.
CREATE TABLE IF NOT EXISTS ferroq_paused_queues (
    scope     TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    prefix    INTEGER NOT NULL,
    paused_at INTEGER NOT NULL,
    PRIMARY KEY (scope, queue, prefix)
) STRICT;

ALTER TABLE ferroq_jobs ADD COLUMN cancel_requested_at INTEGER;
