-- Retention: completed jobs of this scope only; failed and discarded jobs stay for inspection.
-- At most $3 rows a statement, so that no one call outlasts statement_timeout however large the
-- backlog: the cleaner repeats it until a statement deletes fewer.
DELETE FROM ferroq_jobs
WHERE id IN (
    SELECT j.id FROM ferroq_jobs AS j
    WHERE j.scope = $1 AND j.state = 'completed' AND j.done_at < now() - $2 * interval '1 second'
    LIMIT $3
)
