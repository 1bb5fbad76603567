-- Hand the head of each blocking queue on after jobs left it (?1: a JSON array of the ids just
-- finished, cancelled or failed by the rescuer): the next unfinished job in FIFO order becomes
-- the head, its turn starting now, so the queue goes to the back of the line.
UPDATE ferroq_jobs
SET head = 1, run_at = max(run_at, {{now}})
WHERE head IS NOT 1 AND id IN (
    SELECT (SELECT n.id FROM ferroq_jobs AS n
            WHERE n.scope = f.scope AND n.queue = f.queue AND n.blocking
              AND n.state IN ('scheduled', 'available', 'running', 'retryable')
            ORDER BY n.scheduled_at, n.id
            LIMIT 1)
    FROM ferroq_jobs AS f
    WHERE f.id IN (SELECT value FROM json_each(?1)) AND f.blocking
      AND f.state IN ('completed', 'failed', 'discarded')
)
