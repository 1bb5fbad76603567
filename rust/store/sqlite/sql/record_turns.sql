-- Remember that a claim just served these concurrent queues (?2: a JSON array of names).
INSERT INTO ferroq_queue_turns (scope, queue, served_at)
SELECT ?1, q.value, {{now}} FROM json_each(?2) AS q WHERE true
ON CONFLICT (scope, queue) DO UPDATE SET served_at = excluded.served_at
