SELECT count(*)
FROM ferroq_jobs AS j
WHERE {{filter}}
