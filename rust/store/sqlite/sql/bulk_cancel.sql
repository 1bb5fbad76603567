-- cancel_job.sql for every job the filter matches (?4: the states a cancel applies to). The
-- ids go to promote_heads.sql, which hands on the blocking queues whose head was cancelled.
UPDATE ferroq_jobs
SET state = 'discarded', error = 'cancelled', done_at = {{now}}, next_attempt_at = NULL
WHERE {{filter}}
RETURNING id
