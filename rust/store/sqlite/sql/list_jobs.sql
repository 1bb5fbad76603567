-- Every filter is optional (NULL = any); ?4 is a JSON array of states; ?5 a case-insensitive
-- regular expression matching the search text literally (LIKE would fold ASCII letters only).
-- The ORDER BY column comes from a fixed allowlist. The search reads JSON params only: a bytes
-- job's params column holds a placeholder.
SELECT {{job_columns}}, {{blocked_by}}
FROM ferroq_jobs
WHERE scope = ?1
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR state IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR action REGEXP ?5 OR (params_bytes IS NULL AND params REGEXP ?5) OR error REGEXP ?5)
ORDER BY {{order_by}}
LIMIT ?6 OFFSET ?7
