-- ferroq schema, version 4: params may be bytes (EctoJob's `params_type: :binary`).
-- A bytes job keeps them in params_bytes, stored as given (any byte value), and JSON null in
-- params (NOT NULL, and jsonb has no bytes); a JSON job leaves params_bytes NULL. The check
-- keeps the two from both holding params. Adding a nullable column without a default
-- rewrites no row; the check reads the table once, finding NULL everywhere.
ALTER TABLE ferroq_jobs ADD COLUMN params_bytes bytea;
ALTER TABLE ferroq_jobs ADD CONSTRAINT ferroq_jobs_params_bytes_check
    CHECK (params_bytes IS NULL OR params = 'null'::jsonb);
