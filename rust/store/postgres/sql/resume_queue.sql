-- Resume a queue paused under this name or prefix; nothing if it was not.
DELETE FROM ferroq_paused_queues WHERE scope = $1 AND queue = $2 AND prefix = $3
