    -- Place new blocking jobs in their queues as they are inserted (the pool's statement
    -- commits at once), so that claims need not (see resolve_heads.sql for the rule):
    -- * no unfinished job in the queue: the batch's first job of the queue is its head;
    -- * a job of the batch behind an earlier one of the same queue: waiting (both commit
    --   together, so the earlier one's finisher sees it);
    -- * the batch's first job behind existing ones: waiting, while this statement holds a share
    --   lock on one of them: that job cannot finish before this insert commits, and its
    --   finisher hands the head on in a later statement, which sees this job;
    -- * otherwise (every such job locked right now, or the new job scheduled before them):
    --   NULL, left to the next claim. SKIP LOCKED: an insert never waits, so never deadlocks
    --   with a finisher.
    SELECT b.ord,
           CASE WHEN NOT b.blocking THEN NULL
                WHEN b.rank > 1 THEN false
                WHEN q.last_id IS NULL THEN true
                WHEN q.earliest < q.last_scheduled_at THEN NULL
                WHEN q.held_id IS NOT NULL THEN false
                ELSE NULL
           END AS head
    FROM (SELECT batch.ord, batch.queue, batch.blocking,
                 row_number() OVER (PARTITION BY batch.queue, batch.blocking
                                    ORDER BY batch.at, batch.ord) AS rank
          FROM batch) AS b
    LEFT JOIN (
        SELECT queues.queue, queues.earliest, last.id AS last_id,
               last.scheduled_at AS last_scheduled_at, held.id AS held_id
        FROM (SELECT batch.queue, min(batch.at) AS earliest
              FROM batch WHERE batch.blocking GROUP BY batch.queue) AS queues
        LEFT JOIN LATERAL (
            SELECT p.id, p.scheduled_at FROM ferroq_jobs AS p
            WHERE p.scope = $1 AND p.blocking AND p.queue = queues.queue
              AND p.state IN ('scheduled', 'available', 'running', 'retryable')
            ORDER BY p.scheduled_at DESC, p.sequence DESC
            LIMIT 1
        ) AS last ON true
        LEFT JOIN LATERAL (
            SELECT p.id FROM ferroq_jobs AS p
            WHERE p.scope = $1 AND p.blocking AND p.queue = queues.queue
              AND p.state IN ('scheduled', 'available', 'running', 'retryable')
            ORDER BY p.scheduled_at DESC, p.sequence DESC
            LIMIT 1
            FOR SHARE OF p SKIP LOCKED
        ) AS held ON true
    ) AS q ON q.queue = b.queue AND b.blocking
