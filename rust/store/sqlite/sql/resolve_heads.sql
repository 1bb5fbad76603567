-- Decide the place of new blocking jobs (head IS NULL) of scope ?1: the head of its queue when
-- no unfinished job is before it, else waiting behind (see the PostgreSQL twin). Runs at the
-- start of each claim inside BEGIN IMMEDIATE, the only writer: no locks are needed. At most ?2
-- jobs per statement.
UPDATE ferroq_jobs
SET head = NOT EXISTS (
    SELECT 1 FROM ferroq_jobs AS p
    WHERE p.scope = ferroq_jobs.scope AND p.blocking AND p.queue = ferroq_jobs.queue
      AND p.state IN ('scheduled', 'available', 'running', 'retryable')
      AND (p.scheduled_at, p.id) < (ferroq_jobs.scheduled_at, ferroq_jobs.id)
)
WHERE id IN (
    SELECT f.id FROM ferroq_jobs AS f
    WHERE f.scope = ?1 AND f.blocking AND f.head IS NULL
      AND f.state IN ('scheduled', 'available', 'running', 'retryable')
    ORDER BY f.id
    LIMIT ?2
)
