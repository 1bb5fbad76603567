-- Claim up to ?3 jobs in one statement, shared fairly between the ready queues (see the
-- PostgreSQL twin for the rule: lowest load first, then the oldest turn). Runs inside
-- BEGIN IMMEDIATE after resolve_heads.sql: this process is the only writer, no row locks.
-- ?1 scope, ?2 the concurrent queues served as a JSON array of [queue, cap], ?3 the batch
-- size, ?4 the worker's name, ?5 the lease in seconds, ?6 the actions served (JSON array, NULL:
-- any), ?7/?8 the blocking queues served: JSON arrays of exact names and of name prefixes
-- (both NULL: every queue), ?9 the most blocking heads to claim (the worker's slots free now:
-- heads are never claimed ahead).
-- Paused queues (ferroq_paused_queues: names, and prefixes) start nothing, as on PostgreSQL.
WITH caps AS (
    SELECT json_extract(q.value, '$[0]') AS queue, json_extract(q.value, '$[1]') AS cap
    FROM json_each(?2) AS q
), served_caps AS (
    SELECT caps.queue, caps.cap FROM caps
    WHERE NOT EXISTS (SELECT 1 FROM ferroq_paused_queues AS p
                      WHERE p.scope = ?1
                        AND (p.queue = caps.queue
                             OR (p.prefix AND substr(caps.queue, 1, length(p.queue)) = p.queue)))
), counted AS MATERIALIZED (
    -- Once per queue: inlined, the count would run again for every job the queue hands out.
    SELECT caps.queue, caps.cap,
           (SELECT count(*) FROM ferroq_jobs AS r
            WHERE r.scope = ?1 AND r.queue = caps.queue AND NOT r.blocking
              AND r.state = 'running') AS running,
           coalesce((SELECT t.served_at FROM ferroq_queue_turns AS t
                     WHERE t.scope = ?1 AND t.queue = caps.queue), 0) AS turn
    FROM served_caps AS caps
), concurrent_candidates AS (
    SELECT r.id, counted.cap,
           counted.running + row_number() OVER (PARTITION BY counted.queue
                                                ORDER BY r.priority, r.scheduled_at, r.id) AS load,
           counted.turn, r.priority, r.scheduled_at
    FROM counted JOIN ferroq_jobs AS r ON r.id IN (
        SELECT x.id FROM ferroq_jobs AS x
        WHERE x.scope = ?1 AND x.queue = counted.queue AND NOT x.blocking
          AND x.state IN ('scheduled', 'available', 'retryable') AND x.run_at <= {{now}}
          AND (?6 IS NULL OR x.action IN (SELECT value FROM json_each(?6)))
        ORDER BY x.priority, x.scheduled_at, x.id
        LIMIT ?3
    )
), head_candidates AS (
    -- The marked heads that are due, oldest turn first: one range of ferroq_jobs_ready_heads.
    SELECT h.id, 1 AS load, h.run_at AS turn, h.priority, h.scheduled_at
    FROM ferroq_jobs AS h
    WHERE h.scope = ?1 AND h.blocking AND h.head
      AND h.state IN ('scheduled', 'available', 'retryable') AND h.run_at <= {{now}}
      -- A head of an action the worker does not serve is skipped, and holds its queue.
      AND (?6 IS NULL OR h.action IN (SELECT value FROM json_each(?6)))
      AND ((?7 IS NULL AND ?8 IS NULL)
           OR h.queue IN (SELECT value FROM json_each(?7))
           OR EXISTS (SELECT 1 FROM json_each(?8) AS p
                      WHERE substr(h.queue, 1, length(p.value)) = p.value))
      -- A paused queue's head is skipped, and holds its queue until resumed.
      AND NOT EXISTS (SELECT 1 FROM ferroq_paused_queues AS p
                      WHERE p.scope = ?1
                        AND (p.queue = h.queue
                             OR (p.prefix AND substr(h.queue, 1, length(p.queue)) = p.queue)))
      -- The mark is a hint; the queue's order is the truth.
      AND NOT EXISTS (SELECT 1 FROM ferroq_jobs AS p
                      WHERE p.scope = ?1 AND p.blocking AND p.queue = h.queue
                        AND p.state IN ('scheduled', 'available', 'running', 'retryable')
                        AND (p.scheduled_at, p.id) < (h.scheduled_at, h.id))
      AND NOT EXISTS (SELECT 1 FROM ferroq_jobs AS r
                      WHERE r.scope = ?1 AND r.blocking AND r.queue = h.queue
                        AND r.state = 'running')
    ORDER BY h.run_at, h.id
    LIMIT min(?3, ?9)
), claimable AS (
    SELECT id, load, turn, priority, scheduled_at FROM concurrent_candidates WHERE load <= cap
    UNION ALL
    SELECT id, load, turn, priority, scheduled_at FROM head_candidates
)
UPDATE ferroq_jobs
SET state = 'running',
    attempts = attempts + 1,
    attempted_at = {{now}},
    attempted_by = ?4,
    next_attempt_at = NULL,
    lease_token = abs(random()),
    lease_expires_at = {{now}} + CAST(?5 * 1000000 AS INTEGER)
WHERE id IN (
    SELECT id FROM claimable ORDER BY load, turn, priority, scheduled_at, id LIMIT ?3
)
RETURNING {{job_columns}}
