-- ferroq stats: the heads of blocking queues that hold their queue (at most $3, by queue),
-- with the number of jobs behind each, the number of such heads in all, and whether the queue
-- is paused. A head holds its queue when the queue is paused (and the head is not running),
-- or it waits for a retry, or it has no performer among $2 (the caller's; NULL: not known), or
-- it is scheduled (snoozed) or running while jobs wait behind it. A ready head with a
-- performer only waits for a worker: the queue's oldest available age shows that.
WITH heads AS (
    SELECT j.*,
           EXISTS (SELECT 1 FROM ferroq_paused_queues AS p
                   WHERE p.scope = j.scope
                     AND (p.queue = j.queue OR (p.prefix AND starts_with(j.queue, p.queue)))) AS paused,
           EXISTS (SELECT 1 FROM ferroq_jobs AS b
                   WHERE b.scope = j.scope AND b.queue = j.queue AND b.blocking AND b.id <> j.id
                     AND b.state IN ('scheduled', 'available', 'running', 'retryable')) AS has_behind
    FROM ferroq_jobs AS j
    WHERE j.scope = $1 AND j.blocking AND j.head
      AND j.state IN ('scheduled', 'available', 'running', 'retryable')
)
SELECT {{job_columns}}, NULL::int8 AS blocked_by,
       (SELECT count(*) FROM ferroq_jobs AS b
        WHERE b.scope = j.scope AND b.queue = j.queue AND b.blocking AND b.id <> j.id
          AND b.state IN ('scheduled', 'available', 'running', 'retryable')) AS behind,
       count(*) OVER () AS total,
       j.paused
FROM heads AS j
WHERE j.state = 'retryable'
   OR (j.paused AND j.state <> 'running')
   OR (j.state = 'available' AND $2::text[] IS NOT NULL AND NOT (j.action = ANY($2)))
   OR (j.state IN ('scheduled', 'running') AND j.has_behind)
ORDER BY j.queue
LIMIT $3
