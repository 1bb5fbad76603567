-- Pause a queue ($2 a name, or a prefix when $3) of scope $1; pausing it again keeps the
-- first pause's time.
INSERT INTO ferroq_paused_queues (scope, queue, prefix, paused_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (scope, queue, prefix) DO NOTHING
