-- Run a waiting or finished-unsuccessfully job again now, with at least one attempt left
-- (retry_set.sql, shared with bulk_retry.sql): a job back in a blocking queue has its place
-- decided again by the next claim (head IS NULL), and a cancel request is forgotten.
UPDATE ferroq_jobs AS j
SET {{retry_set}}
WHERE j.scope = $1 AND j.id = $2
  AND j.state IN ('scheduled', 'available', 'retryable', 'failed', 'discarded')
RETURNING {{job_columns}}
