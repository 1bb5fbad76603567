-- retry_set.sql, shared with bulk_retry.sql: a job back in a blocking queue has its place
-- decided again by the next claim (head IS NULL), and a cancel request is forgotten.
UPDATE ferroq_jobs
SET {{retry_set}}
WHERE scope = ?1 AND id = ?2
  AND state IN ('scheduled', 'available', 'retryable', 'failed', 'discarded')
RETURNING {{job_columns}}
