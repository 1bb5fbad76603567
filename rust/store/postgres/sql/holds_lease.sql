-- Whether the attempt ($1 id, $2 lease token) still holds its job: the same lease, still
-- running. One row when it does. After a performer returned, a completion it ran in its own
-- transaction has committed exactly when its attempt no longer holds the job.
SELECT 1 FROM ferroq_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running'
