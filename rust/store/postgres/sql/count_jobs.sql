SELECT count(*)
FROM ferroq_jobs AS j
WHERE j.scope = $1
  AND ($2::text IS NULL OR j.queue = $2)
  AND ($3::text IS NULL OR j.action = $3)
  AND ($4::text[] IS NULL OR j.state = ANY($4))
  AND ($5::text IS NULL OR j.action ILIKE $5 OR (j.params_bytes IS NULL AND j.params::text ILIKE $5) OR j.error ILIKE $5)
