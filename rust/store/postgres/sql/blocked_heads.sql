-- ferroq stats: the heads of blocking queues that hold their queue (at most $3, by queue),
-- with the number of jobs behind each and the number of such heads in all. A head holds its
-- queue when it waits for a retry, or has no performer among $2 (the caller's, NULL: not
-- known), or is scheduled or running while jobs wait behind it. A ready head with a
-- performer only waits for a worker: the queue's oldest available age shows that.
SELECT {{job_columns}}, NULL::int8 AS blocked_by,
       (SELECT count(*) FROM ferroq_jobs AS b
        WHERE b.scope = j.scope AND b.queue = j.queue AND b.blocking AND b.id <> j.id
          AND b.state IN ('scheduled', 'available', 'running', 'retryable')) AS behind,
       count(*) OVER () AS total
FROM ferroq_jobs AS j
WHERE j.scope = $1 AND j.blocking AND j.head
  AND j.state IN ('scheduled', 'available', 'running', 'retryable')
  AND (j.state = 'retryable'
       OR (j.state = 'available' AND $2::text[] IS NOT NULL AND NOT (j.action = ANY($2)))
       OR (j.state IN ('scheduled', 'running') AND EXISTS (
             SELECT 1 FROM ferroq_jobs AS b
             WHERE b.scope = j.scope AND b.queue = j.queue AND b.blocking AND b.id <> j.id
               AND b.state IN ('scheduled', 'available', 'running', 'retryable'))))
ORDER BY j.queue
LIMIT $3
