-- Move periodic entry (?1, ?2) forward to tick ?3 (making its row if it has none); a row at ?3
-- or later is left alone and nothing comes back. The store runs it in a BEGIN IMMEDIATE
-- transaction with the tick's insert, so callers of the same tick take turns on the write lock
-- and each one after the first sees the first one's tick.
INSERT INTO ferroq_periodic (scope, name, last_tick) VALUES (?1, ?2, ?3)
ON CONFLICT (scope, name) DO UPDATE SET last_tick = excluded.last_tick
WHERE ferroq_periodic.last_tick < excluded.last_tick
RETURNING last_tick
