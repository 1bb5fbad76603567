j.scope = $1
  -- The filters of list_jobs, count_jobs and the bulk changes; each is optional (NULL = any).
  -- The search ($5) reads JSON params only: a bytes job's params column holds a placeholder.
  -- Age ($6, seconds): a finished job's from when it finished, any other's from its insert.
  AND ($2::text IS NULL OR j.queue = $2)
  AND ($3::text IS NULL OR j.action = $3)
  AND ($4::text[] IS NULL OR j.state = ANY($4))
  AND ($5::text IS NULL OR j.action ILIKE $5 OR (j.params_bytes IS NULL AND j.params::text ILIKE $5) OR j.error ILIKE $5)
  AND ($6::float8 IS NULL OR coalesce(j.done_at, j.inserted_at) < now() - $6 * interval '1 second')
