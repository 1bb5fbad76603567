-- Transactional completion on the caller's own connection (see the PostgreSQL twin): ?1 id,
-- ?2 lease token; one row back when it applied.
UPDATE ferroq_jobs
SET state = 'completed', error = NULL, done_at = {{now}}, next_attempt_at = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
RETURNING id
