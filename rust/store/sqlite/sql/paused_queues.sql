SELECT queue, prefix, paused_at
FROM ferroq_paused_queues
WHERE scope = ?1
ORDER BY queue, prefix
