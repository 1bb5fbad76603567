SELECT p.queue, p.prefix, p.paused_at
FROM ferroq_paused_queues AS p
WHERE p.scope = $1
ORDER BY p.queue, p.prefix
