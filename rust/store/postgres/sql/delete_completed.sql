-- Retention: completed jobs of this scope only; failed and discarded jobs stay for inspection.
DELETE FROM ferroq_jobs AS j
WHERE j.scope = $1 AND j.state = 'completed' AND j.done_at < now() - $2 * interval '1 second'
