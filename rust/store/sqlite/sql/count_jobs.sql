SELECT count(*)
FROM ferroq_jobs
WHERE {{filter}}
