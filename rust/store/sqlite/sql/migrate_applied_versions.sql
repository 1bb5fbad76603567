SELECT version FROM ferroq_schema_migrations ORDER BY version
