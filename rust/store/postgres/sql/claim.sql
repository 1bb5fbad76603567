-- Claim up to $4 jobs in one statement, shared fairly between the ready queues. Parameters:
-- $1 scope, $2/$3 the concurrent queues this worker serves and their caps (empty arrays when
-- there are none), $4 the batch size, $5 the worker's name, $6 the lease in seconds, $7 the
-- actions the worker has performers for (NULL: any), $8/$9 the blocking queues it serves:
-- exact names and name prefixes (both NULL: every queue; see QueueSelector in config.rs),
-- $10 the most blocking heads to claim (the worker's slots free now: heads are never claimed
-- ahead).
-- Runs after resolve_heads.sql and lock_concurrent_queues.sql in the same transaction.
--
-- Fairness: every candidate job gets a load, the number of jobs its queue would then run (a
-- blocking head: 1; the k-th ready job of a concurrent queue with r running: r + k), and a
-- turn, when its queue last got service (a blocking head: when it became the head or came
-- due; a concurrent queue: its last claim). The lowest load goes first, then the oldest turn:
-- ready queues take turns, and neither a queue's name nor its backlog can push another back.
--
-- Paused queues (ferroq_paused_queues: names, and prefixes that pause every queue starting
-- with them) start nothing: their concurrent queues get no caps row, their heads are skipped.
-- The scope's entries are read once; with none, the checks below cost nothing measurable.
WITH paused AS MATERIALIZED (
    SELECT p.queue, p.prefix FROM ferroq_paused_queues AS p WHERE p.scope = $1
), caps AS MATERIALIZED (
    -- Each concurrent queue within its limit of running jobs across all workers (the count
    -- cannot be raced past: claimers of a queue are serialized by its lock). Materialized:
    -- inlined, the count would run again for every row the queue hands out.
    SELECT q.queue, q.cap,
           (SELECT count(*) FROM ferroq_jobs AS r
            WHERE r.scope = $1 AND r.queue = q.queue AND NOT r.blocking
              AND r.state = 'running') AS running,
           (SELECT t.served_at FROM ferroq_queue_turns AS t
            WHERE t.scope = $1 AND t.queue = q.queue) AS served_at
    FROM unnest($2::text[], $3::int8[]) AS q(queue, cap)
    WHERE NOT EXISTS (SELECT 1 FROM paused
                      WHERE paused.queue = q.queue
                         OR (paused.prefix AND starts_with(q.queue, paused.queue)))
), concurrent_locked AS (
    -- Per queue, in priority then FIFO order, no more rows than the batch or the limit allows.
    SELECT caps.queue, caps.running, caps.served_at,
           c.id, c.priority, c.scheduled_at, c.sequence
    FROM caps CROSS JOIN LATERAL (
        SELECT r.id, r.priority, r.scheduled_at, r.sequence
        FROM ferroq_jobs AS r
        WHERE r.scope = $1 AND r.queue = caps.queue AND NOT r.blocking
          AND r.state IN ('scheduled', 'available', 'retryable') AND r.run_at <= now()
          AND ($7::text[] IS NULL OR r.action = ANY($7))
        ORDER BY r.priority, r.scheduled_at, r.sequence
        LIMIT least(greatest(caps.cap - caps.running, 0), $4)
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
), concurrent_candidates AS (
    SELECT l.id, l.queue,
           l.running + row_number() OVER (PARTITION BY l.queue
                                          ORDER BY l.priority, l.scheduled_at, l.sequence) AS load,
           coalesce(l.served_at, '-infinity') AS turn,
           l.priority, l.scheduled_at, l.sequence
    FROM concurrent_locked AS l
), ready_heads AS (
    -- Blocking queues: the marked heads that are due, oldest turn first, read as one range of
    -- the ferroq_jobs_ready_heads index: queues that are idle, running or waiting on a later
    -- retry are not in that range, so they cost this claim nothing.
    SELECT h.id
    FROM ferroq_jobs AS h
    WHERE h.scope = $1 AND h.blocking AND h.head
      AND h.state IN ('scheduled', 'available', 'retryable') AND h.run_at <= now()
      -- A head of an action the worker does not serve is skipped, and holds its queue.
      AND ($7::text[] IS NULL OR h.action = ANY($7))
      AND (($8::text[] IS NULL AND $9::text[] IS NULL) OR h.queue = ANY($8)
           OR EXISTS (SELECT 1 FROM unnest($9::text[]) AS p(prefix) WHERE starts_with(h.queue, p.prefix)))
      -- A paused queue's head is skipped, and holds its queue until resumed.
      AND NOT EXISTS (SELECT 1 FROM paused
                      WHERE paused.queue = h.queue
                         OR (paused.prefix AND starts_with(h.queue, paused.queue)))
      -- The mark is a hint; the queue's order is the truth: the head must be the first
      -- unfinished job of its queue (so none of the queue runs before it). Written as the
      -- first entry of the FIFO index rather than NOT EXISTS: the planner cannot turn it into
      -- an anti join that reads every queue's entries, whatever its statistics.
      AND h.id = (SELECT p.id FROM ferroq_jobs AS p
                  WHERE p.scope = $1 AND p.blocking AND p.queue = h.queue
                    AND p.state IN ('scheduled', 'available', 'running', 'retryable')
                  ORDER BY p.scheduled_at, p.sequence
                  LIMIT 1)
      -- Nor may another of its jobs run: a job put back ahead of the running one (a retried
      -- older job) waits for it, instead of failing every claim on the one-running index.
      AND NOT EXISTS (SELECT 1 FROM ferroq_jobs AS r
                      WHERE r.scope = $1 AND r.blocking AND r.queue = h.queue AND r.state = 'running')
    ORDER BY h.run_at, h.sequence
    LIMIT least($4, $10)
    -- Locked as they are read, so the limit counts only heads this claim gets: a head another
    -- claimer holds right now is passed over for the next one. Locked after the limit, two
    -- claimers starting together would pick the same first heads and one would get none,
    -- then sleep until a wake-up that no one sends while ready heads wait.
    FOR UPDATE OF h SKIP LOCKED
), head_candidates AS (
    -- The row lock re-checks the state (SKIP LOCKED + READ COMMITTED re-evaluation), and the
    -- unique index ferroq_jobs_one_running_per_blocking_queue backs the rule up in the schema.
    SELECT c.id, NULL::text AS queue, 1::int8 AS load, c.run_at AS turn,
           c.priority, c.scheduled_at, c.sequence
    FROM ferroq_jobs AS c JOIN ready_heads ON ready_heads.id = c.id
    WHERE c.state IN ('scheduled', 'available', 'retryable') AND c.run_at <= now()
    FOR UPDATE OF c SKIP LOCKED
), claimable AS (
    SELECT all_candidates.id, all_candidates.queue
    FROM (SELECT * FROM concurrent_candidates UNION ALL SELECT * FROM head_candidates) AS all_candidates
    ORDER BY all_candidates.load, all_candidates.turn, all_candidates.priority,
             all_candidates.scheduled_at, all_candidates.sequence
    LIMIT $4
), served AS (
    INSERT INTO ferroq_queue_turns AS t (scope, queue, served_at)
    SELECT DISTINCT $1, claimable.queue, now() FROM claimable WHERE claimable.queue IS NOT NULL
    ON CONFLICT (scope, queue) DO UPDATE SET served_at = excluded.served_at
)
UPDATE ferroq_jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    attempted_at = now(),
    attempted_by = $5,
    next_attempt_at = NULL,
    lease_token = nextval('ferroq_lease_token_seq'),
    lease_expires_at = now() + $6 * interval '1 second'
-- The ids as one array: each is then a primary-key lookup. Joined to the CTE instead, the
-- generic plan of this prepared statement guesses the batch at a thousand rows and hashes a
-- sequential scan of the whole table, on every claim (8 ms at 20,000 rows, growing with it).
WHERE j.id = ANY (ARRAY(SELECT claimable.id FROM claimable))
RETURNING {{job_columns}}
