-- ferroq schema, version 5 (see the PostgreSQL twin): nothing to change. SQLite already keeps
-- params and result as checked JSON text, exactly as written; the version exists so both
-- dialects stay numbered in lock-step.
SELECT 1;
