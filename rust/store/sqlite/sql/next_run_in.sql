SELECT (min(run_at) - {{now}}) / 1000000.0
FROM ferroq_jobs
WHERE scope = ?1 AND state IN ('scheduled', 'retryable') AND run_at > {{now}}
