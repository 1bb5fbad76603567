-- Record one finished attempt, only while it still holds the job (same lease token, running).
UPDATE ferroq_jobs
SET state = ?3,
    result = json(?4),
    error = coalesce(?5, error),
    attempts = attempts - ?7,
    next_attempt_at = CASE WHEN ?6 IS NULL THEN NULL ELSE {{now}} + CAST(?6 * 1000000 AS INTEGER) END,
    run_at = CASE WHEN ?6 IS NULL THEN run_at ELSE {{now}} + CAST(?6 * 1000000 AS INTEGER) END,
    done_at = CASE WHEN ?3 IN ('completed', 'failed', 'discarded') THEN {{now}} END,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = ?1 AND lease_token = ?2 AND state = 'running'
