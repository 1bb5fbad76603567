-- ferroq schema, version 6: periodic (cron) entries (see the PostgreSQL twin). last_tick is in
-- integer microseconds since the Unix epoch, as every time in this schema.
CREATE TABLE IF NOT EXISTS ferroq_periodic (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    last_tick INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
