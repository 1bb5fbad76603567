-- ferroq schema, version 2. Kept in step with PostgreSQL's version 2, which moved the
-- new-job announcement from a trigger into the insert statement. SQLite workers learn of new
-- jobs from PRAGMA data_version; nothing changes here.
SELECT 1;
