-- Tell other processes to look for work: SQLite has no NOTIFY, but their watchers see any
-- commit that writes a page (PRAGMA data_version). A write that matches no row writes none,
-- so this rewrites one row with its own value.
UPDATE ferroq_schema_migrations SET version = version
WHERE version = (SELECT min(version) FROM ferroq_schema_migrations)
