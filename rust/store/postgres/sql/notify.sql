SELECT pg_notify('ferroq_jobs', $1)
