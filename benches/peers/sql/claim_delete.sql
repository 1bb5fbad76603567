-- Claim ceiling, like a worker: claim up to 500 ready jobs (FOR UPDATE SKIP LOCKED, mark them
-- running) in one transaction, then complete them (DELETE by id array) in a second one.
\set batch 500
WITH c AS (SELECT id FROM bench_jobs WHERE state = 0 AND queue = 'default' AND run_at <= now()
           ORDER BY run_at, id LIMIT :batch::int FOR UPDATE SKIP LOCKED),
     u AS (UPDATE bench_jobs j SET state = 1, attempts = j.attempts + 1 FROM c
           WHERE j.id = c.id RETURNING j.id)
SELECT coalesce(array_agg(id), '{}')::text AS ids FROM u \gset
DELETE FROM bench_jobs WHERE id = ANY(:ids::bigint[]);
