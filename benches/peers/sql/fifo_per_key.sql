-- FIFO per key ceiling (blocking queues): claim the head job (lowest id) of up to 500 keys that
-- have no running job, marking key and job running, in one transaction; then complete them
-- (DELETE the jobs, free their keys) in a second one. At most one running job per key.
-- Each client starts its scan of the keys at its own offset (run.py passes -D nkeys=K
-- -D nclients=C), so two clients do not keep fighting over the same first keys.
\set batch 500
\set offset :client_id * (:nkeys / :nclients)
WITH k AS (SELECT key FROM bench_fifo_keys WHERE NOT running
           ORDER BY (key + :offset::int) % :nkeys::int LIMIT :batch::int FOR UPDATE SKIP LOCKED),
     c AS (SELECT h.id, k.key FROM k
           CROSS JOIN LATERAL (SELECT f.id FROM bench_fifo f WHERE f.key = k.key
                               ORDER BY f.id LIMIT 1) h),
     r AS (UPDATE bench_fifo_keys fk SET running = true FROM c
           WHERE fk.key = c.key RETURNING c.id, c.key),
     u AS (UPDATE bench_fifo j SET state = 1, attempts = j.attempts + 1 FROM r
           WHERE j.id = r.id RETURNING j.id, j.key)
SELECT coalesce(array_agg(id), '{}')::text AS ids, coalesce(array_agg(key), '{}')::text AS keys FROM u \gset
BEGIN;
DELETE FROM bench_fifo WHERE id = ANY(:ids::bigint[]);
UPDATE bench_fifo_keys SET running = false WHERE key = ANY(:keys::int[]);
COMMIT;
