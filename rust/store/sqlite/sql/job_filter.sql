scope = ?1
  -- The filters of list_jobs, count_jobs and the bulk changes; each is optional (NULL = any).
  -- ?4 is a JSON array of states; ?5 a case-insensitive regular expression matching the search
  -- text literally (LIKE would fold ASCII letters only), over JSON params only: a bytes job's
  -- params column holds a placeholder. Age (?6, seconds): a finished job's from when it
  -- finished, any other's from its insert.
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR state IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR action REGEXP ?5 OR (params_bytes IS NULL AND params REGEXP ?5) OR error REGEXP ?5)
  AND (?6 IS NULL OR coalesce(done_at, inserted_at) < {{now}} - CAST(?6 * 1000000 AS INTEGER))
