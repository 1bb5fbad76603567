-- ferroq stats: jobs per queue and state, and for available ones how long (seconds, on the
-- database clock) the one claimable longest ago has waited.
SELECT j.queue, bool_or(j.blocking), j.state, count(*),
       extract(epoch FROM now() - min(j.run_at) FILTER (WHERE j.state = 'available'))::float8
FROM ferroq_jobs AS j
WHERE j.scope = $1
GROUP BY j.queue, j.state
ORDER BY j.queue, j.state
