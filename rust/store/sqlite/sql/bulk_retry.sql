-- retry_job.sql for every job the filter matches (?4: the states a retry applies to).
UPDATE ferroq_jobs
SET {{retry_set}}
WHERE {{filter}}
