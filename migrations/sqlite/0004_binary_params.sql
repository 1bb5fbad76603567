-- ferroq schema, version 4 (see the PostgreSQL twin): params may be bytes, kept in
-- params_bytes as given, with JSON null in params. SQLite checks an added column's CHECK
-- against the existing rows, which all have NULL there.
ALTER TABLE ferroq_jobs ADD COLUMN params_bytes BLOB
    CHECK (params_bytes IS NULL OR params = 'null');
