INSERT INTO ferroq_schema_migrations (version, name) VALUES ($1, $2)
