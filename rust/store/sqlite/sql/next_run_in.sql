-- When the scope's waiting jobs become due (see the PostgreSQL twin).
SELECT (SELECT (min(run_at) - {{now}}) / 1000000.0
        FROM ferroq_jobs
        WHERE scope = ?1 AND state IN ('scheduled', 'retryable') AND run_at > {{now}}),
       (SELECT ({{now}} - max(run_at)) / 1000000.0
        FROM ferroq_jobs
        WHERE scope = ?1 AND state IN ('scheduled', 'retryable') AND run_at <= {{now}})
