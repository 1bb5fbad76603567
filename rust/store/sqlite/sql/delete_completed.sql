-- At most ?3 rows a statement: the write lock is held for one batch, not the whole backlog.
DELETE FROM ferroq_jobs
WHERE id IN (
    SELECT id FROM ferroq_jobs
    WHERE scope = ?1 AND state = 'completed' AND done_at < {{now}} - CAST(?2 * 1000000 AS INTEGER)
    LIMIT ?3
)
