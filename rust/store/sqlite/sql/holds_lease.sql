-- See the PostgreSQL twin: one row while the attempt (?1 id, ?2 lease token) holds its job.
SELECT 1 FROM ferroq_jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
