-- The concurrent queues of scope ?1 that have waiting jobs, in name order, for a worker that
-- serves queues by name pattern ("shop:*"): one index search per such queue.
WITH RECURSIVE waiting(queue) AS (
    SELECT * FROM (
        SELECT r.queue FROM ferroq_jobs AS r
        WHERE r.scope = ?1 AND NOT r.blocking AND r.state IN ('scheduled', 'available', 'retryable')
        ORDER BY r.queue
        LIMIT 1
    )
    UNION ALL
    SELECT (SELECT r.queue FROM ferroq_jobs AS r
            WHERE r.scope = ?1 AND NOT r.blocking
              AND r.state IN ('scheduled', 'available', 'retryable') AND r.queue > waiting.queue
            ORDER BY r.queue
            LIMIT 1)
    FROM waiting
    WHERE waiting.queue IS NOT NULL
)
SELECT queue FROM waiting WHERE queue IS NOT NULL
