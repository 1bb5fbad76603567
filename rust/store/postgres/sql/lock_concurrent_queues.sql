-- Serialize claimers of the same concurrent queues for the rest of the transaction, so that
-- the running count read by claim.sql cannot be raced past the queue's limit.
-- Locks are taken in name order to avoid deadlocks between claimers.
SELECT pg_advisory_xact_lock(hashtextextended('ferroq/' || $1 || '/' || q.queue, 0))
FROM (SELECT DISTINCT unnest($2::text[]) AS queue) AS q
ORDER BY q.queue
