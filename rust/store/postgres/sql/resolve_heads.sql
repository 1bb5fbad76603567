-- Decide the place of new blocking jobs (head IS NULL) of scope $1: the head of its queue, or
-- waiting behind another job. Runs at the start of each claim, in its own statement, so the
-- insert path takes no lock and reads nothing.
--
-- A job with no unfinished job before it becomes the head. A job behind another becomes
-- head = false only while this claim holds a share lock on one of the jobs before it: that job
-- cannot finish until this claim commits, and its finisher hands the head on in a statement
-- that starts after that (promote_heads.sql), so it sees this job. If every job before it is
-- locked (being claimed or finished right now), the job stays undecided for the next claim.
-- At most $2 jobs per statement; it returns how many it looked at, so that the caller knows
-- whether more wait, and whether it skipped new jobs another claimer is placing right now:
-- those may be ready heads once that claim commits, which no NOTIFY announces, so the caller
-- looks again shortly instead of waiting for one.
WITH fresh AS (
    SELECT f.id, f.queue, f.scheduled_at, f.sequence
    FROM ferroq_jobs AS f
    WHERE f.scope = $1 AND f.blocking AND f.head IS NULL
      AND f.state IN ('scheduled', 'available', 'running', 'retryable')
    ORDER BY f.id
    LIMIT $2
    FOR UPDATE OF f SKIP LOCKED
), decided AS (
    -- The first unfinished job of the queue, as the first entry of the FIFO index (not an
    -- EXISTS, which the planner may turn into an anti join over every queue).
    SELECT fresh.id,
           fresh.id <> (SELECT p.id FROM ferroq_jobs AS p
                        WHERE p.scope = $1 AND p.blocking AND p.queue = fresh.queue
                          AND p.state IN ('scheduled', 'available', 'running', 'retryable')
                        ORDER BY p.scheduled_at, p.sequence
                        LIMIT 1) AS behind,
           ahead.id AS held_ahead
    FROM fresh
    LEFT JOIN LATERAL (
        SELECT p.id FROM ferroq_jobs AS p
        WHERE p.scope = $1 AND p.blocking AND p.queue = fresh.queue
          AND p.state IN ('scheduled', 'available', 'running', 'retryable')
          AND (p.scheduled_at, p.sequence) < (fresh.scheduled_at, fresh.sequence)
        ORDER BY p.scheduled_at, p.sequence
        LIMIT 1
        FOR SHARE OF p SKIP LOCKED
    ) AS ahead ON true
), placed AS (
    UPDATE ferroq_jobs AS j
    SET head = NOT decided.behind
    FROM decided
    WHERE j.id = decided.id AND (NOT decided.behind OR decided.held_ahead IS NOT NULL)
)
SELECT (SELECT count(*) FROM fresh),
       EXISTS (SELECT 1 FROM ferroq_jobs AS s
               WHERE s.scope = $1 AND s.blocking AND s.head IS NULL
                 AND s.state IN ('scheduled', 'available', 'running', 'retryable')
                 AND s.id NOT IN (SELECT fresh.id FROM fresh))
