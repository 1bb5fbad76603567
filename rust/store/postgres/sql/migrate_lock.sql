-- Serialize migrators of this schema (the key includes the schema: tests run one per schema).
SELECT pg_advisory_xact_lock(hashtextextended('ferroq/migrate/' || current_schema(), 0))
