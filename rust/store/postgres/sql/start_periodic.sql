-- A periodic entry's starting point ($3), unless it has a row already: ticks after it are
-- enqueued, this one and earlier ones never.
INSERT INTO ferroq_periodic (scope, name, last_tick) VALUES ($1, $2, $3)
ON CONFLICT (scope, name) DO NOTHING
