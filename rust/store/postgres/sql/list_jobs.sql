-- Every filter is optional (NULL = any). The ORDER BY column comes from a fixed allowlist.
-- The search ($5) reads JSON params only: a bytes job's params column holds a placeholder.
SELECT {{job_columns}}, {{blocked_by}}
FROM ferroq_jobs AS j
WHERE j.scope = $1
  AND ($2::text IS NULL OR j.queue = $2)
  AND ($3::text IS NULL OR j.action = $3)
  AND ($4::text[] IS NULL OR j.state = ANY($4))
  AND ($5::text IS NULL OR j.action ILIKE $5 OR (j.params_bytes IS NULL AND j.params::text ILIKE $5) OR j.error ILIKE $5)
ORDER BY {{order_by}}
LIMIT $6 OFFSET $7
