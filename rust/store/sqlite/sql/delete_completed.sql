DELETE FROM ferroq_jobs
WHERE scope = ?1 AND state = 'completed' AND done_at < {{now}} - CAST(?2 * 1000000 AS INTEGER)
