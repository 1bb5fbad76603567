-- ferroq stats: jobs per queue and state, and for available ones how long (seconds, on the
-- database clock) the one claimable longest ago has waited.
SELECT queue, max(blocking), state, count(*),
       ({{now}} - min(CASE WHEN state = 'available' THEN run_at END)) / 1000000.0
FROM ferroq_jobs
WHERE scope = ?1
GROUP BY queue, state
ORDER BY queue, state
