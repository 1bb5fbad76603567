-- Hand the head of each blocking queue on after jobs left it ($1: the ids of jobs that were
-- just finished, cancelled or failed by the rescuer). Runs as its own statement after the
-- one that finished them, in the same transaction, so it also sees a job whose insert
-- committed while that statement waited (see resolve_heads.sql). The next unfinished job in
-- FIFO order becomes the head, its turn starting now: the queue goes to the back of the line.
WITH left_queue AS (
    SELECT DISTINCT f.scope, f.queue
    FROM ferroq_jobs AS f
    WHERE f.id = ANY($1) AND f.blocking AND f.state IN ('completed', 'failed', 'discarded')
), next_heads AS (
    SELECT n.id
    FROM left_queue CROSS JOIN LATERAL (
        SELECT n.id, n.head FROM ferroq_jobs AS n
        WHERE n.scope = left_queue.scope AND n.queue = left_queue.queue AND n.blocking
          AND n.state IN ('scheduled', 'available', 'running', 'retryable')
        ORDER BY n.scheduled_at, n.sequence
        LIMIT 1
    ) AS n
    WHERE n.head IS NOT TRUE
)
UPDATE ferroq_jobs AS j
SET head = true, run_at = greatest(j.run_at, now())
FROM next_heads
WHERE j.id = next_heads.id
