-- Every filter is optional (NULL = any); ?4 is a JSON array of states. The ORDER BY column
-- comes from a fixed allowlist. LIKE is case-insensitive for ASCII in SQLite.
SELECT {{job_columns}}
FROM ferroq_jobs
WHERE scope = ?1
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR state IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR action LIKE ?5 ESCAPE '\' OR params LIKE ?5 ESCAPE '\' OR error LIKE ?5 ESCAPE '\')
ORDER BY {{order_by}}
LIMIT ?6 OFFSET ?7
