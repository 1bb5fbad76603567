-- Seconds until the next waiting job of the scope is due (NULL when none waits).
SELECT extract(epoch FROM min(j.run_at) - now())::float8
FROM ferroq_jobs AS j
WHERE j.scope = $1 AND j.state IN ('scheduled', 'retryable') AND j.run_at > now()
