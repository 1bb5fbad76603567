-- Move periodic entry ($1, $2) forward to tick $3 (making its row if it has none). A row at $3
-- or later is left alone and nothing comes back. Callers of the same tick wait on the row's
-- lock (or its key's) in turn, and each one after the first sees the first one's tick and gets
-- nothing: only the caller that gets a row back inserts the tick's job, in this transaction.
INSERT INTO ferroq_periodic AS p (scope, name, last_tick) VALUES ($1, $2, $3)
ON CONFLICT (scope, name) DO UPDATE SET last_tick = excluded.last_tick
WHERE p.last_tick < excluded.last_tick
RETURNING p.last_tick
