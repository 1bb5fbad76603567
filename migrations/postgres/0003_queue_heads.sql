-- ferroq schema, version 3: claims that cost what they hand out, and fair turns between queues.
--
-- Version 1 found the heads of blocking queues by walking one index entry per queue on every
-- claim, so a claim cost grew with the number of queues that exist, even idle or blocked ones
-- (20,000 queues whose head waits on a retry made a drain 25x slower). Now each blocking queue
-- marks its head, and the ready heads are an index range of their own:
--
--   head IS NULL   a new (or re-entered) blocking job whose place is not yet decided: the next
--                  claim decides it (resolve_heads.sql), in its own statement, with no lock
--                  taken by the insert;
--   head = true    the job was the first unfinished job of its queue when marked;
--   head = false   a job that waits behind another.
--
-- A head's run_at is its turn: when it became claimable. A finished head hands the mark to the
-- next job and sets that job's run_at to now, so a queue that was just served goes to the back
-- of the line and the least recently served ready queue is claimed first.
ALTER TABLE ferroq_jobs ADD COLUMN IF NOT EXISTS head boolean;

CREATE INDEX IF NOT EXISTS ferroq_jobs_ready_heads
    ON ferroq_jobs (scope, run_at, sequence)
    WHERE blocking AND head AND state IN ('scheduled', 'available', 'retryable');

CREATE INDEX IF NOT EXISTS ferroq_jobs_unresolved_heads
    ON ferroq_jobs (scope, id)
    WHERE blocking AND head IS NULL AND state IN ('scheduled', 'available', 'running', 'retryable');

-- When a claim last took a job from each concurrent queue: between concurrent queues with as
-- many jobs running, the one served least recently goes first. Written only by claimers,
-- which already hold the queue's lock; enqueueing never touches it.
CREATE TABLE IF NOT EXISTS ferroq_queue_turns (
    scope     text        NOT NULL,
    queue     text        NOT NULL,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (scope, queue)
);
