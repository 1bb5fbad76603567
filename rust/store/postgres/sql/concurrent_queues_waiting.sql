-- The concurrent queues of scope $1 that have waiting jobs, in name order, for a worker that
-- serves queues by name pattern ("shop:*"): one index descent per such queue.
WITH RECURSIVE waiting(queue) AS (
    (SELECT r.queue FROM ferroq_jobs AS r
     WHERE r.scope = $1 AND NOT r.blocking AND r.state IN ('scheduled', 'available', 'retryable')
     ORDER BY r.queue
     LIMIT 1)
    UNION ALL
    SELECT next_queue.queue
    FROM waiting CROSS JOIN LATERAL (
        SELECT r.queue FROM ferroq_jobs AS r
        WHERE r.scope = $1 AND NOT r.blocking
          AND r.state IN ('scheduled', 'available', 'retryable') AND r.queue > waiting.queue
        ORDER BY r.queue
        LIMIT 1
    ) AS next_queue
)
SELECT queue FROM waiting
