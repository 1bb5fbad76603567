-- The filters of list_jobs.sql.
SELECT count(*)
FROM ferroq_jobs
WHERE scope = ?1
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR state IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR action REGEXP ?5 OR (params_bytes IS NULL AND params REGEXP ?5) OR error REGEXP ?5)
