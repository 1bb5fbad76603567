UPDATE ferroq_jobs
SET lease_expires_at = {{now}} + CAST(?3 * 1000000 AS INTEGER)
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
