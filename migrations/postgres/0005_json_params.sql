-- ferroq schema, version 5: params and result keep the JSON text exactly as written.
-- jsonb normalises what it stores: numbers become `numeric`, so 1e16 comes back as the integer
-- 10000000000000000 and -0.0 as 0.0, and object keys come back sorted. Python decodes those as
-- other values (int for float, 0.0 for -0.0), so a job's params and result were not what was
-- enqueued or returned. `json` checks the syntax and stores the text as given, as SQLite's
-- checked TEXT does; ferroq never reads into params or result in SQL (search reads their
-- text), so nothing needs jsonb's operators.
-- The check of version 4 compares with jsonb's `=`, which json lacks: it becomes json_typeof.
-- Changing the type rewrites the table once (jsonb -> json is not binary coercible); rows
-- stored before keep jsonb's normalised text, as nothing can recover what it dropped.
ALTER TABLE ferroq_jobs DROP CONSTRAINT ferroq_jobs_params_bytes_check;
ALTER TABLE ferroq_jobs
    ALTER COLUMN params TYPE json USING params::json,
    ALTER COLUMN result TYPE json USING result::json;
ALTER TABLE ferroq_jobs ADD CONSTRAINT ferroq_jobs_params_bytes_check
    CHECK (params_bytes IS NULL OR json_typeof(params) = 'null');
