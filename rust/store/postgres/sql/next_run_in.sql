-- When the scope's waiting jobs become due (see DueTimes): seconds until the next one, and
-- seconds since the latest due one became due. NULL when there is none.
SELECT (SELECT extract(epoch FROM min(j.run_at) - now())::float8
        FROM ferroq_jobs AS j
        WHERE j.scope = $1 AND j.state IN ('scheduled', 'retryable') AND j.run_at > now()),
       (SELECT extract(epoch FROM now() - max(j.run_at))::float8
        FROM ferroq_jobs AS j
        WHERE j.scope = $1 AND j.state IN ('scheduled', 'retryable') AND j.run_at <= now())
