-- ferroq schema, version 8: pausing queues, and cancelling a running job.
--
-- A paused queue starts nothing new until resumed; its running jobs finish. An entry is a
-- queue name, or a prefix (`prefix` true) that pauses every queue whose name starts with it,
-- as `only_queues` patterns do (see rust/queues.rs). Both claim statements skip the jobs of
-- paused queues; the table is read whole per claim, so an empty one costs nothing measurable.
CREATE TABLE IF NOT EXISTS ferroq_paused_queues (
    scope     text        NOT NULL,
    queue     text        NOT NULL,
    prefix    boolean     NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, queue, prefix)
);

-- When an operator asked to cancel the running attempt: its worker interrupts the performer
-- and writes the job `discarded`, fenced by the lease token like any outcome; a rescuer ends
-- such a job discarded instead of running it again. A nullable column without a default
-- rewrites no row.
ALTER TABLE ferroq_jobs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;
