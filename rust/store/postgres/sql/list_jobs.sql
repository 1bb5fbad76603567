-- The ORDER BY column comes from a fixed allowlist.
SELECT {{job_columns}}, {{blocked_by}}
FROM ferroq_jobs AS j
WHERE {{filter}}
ORDER BY {{order_by}}
LIMIT $7 OFFSET $8
