-- Tell the workers of scope $1 that a running job's cancel was requested: each looks whether
-- it runs a job with a request. Delivered at COMMIT; a hint only, the lease renewal looks too.
SELECT pg_notify('ferroq_cancels', $1)
