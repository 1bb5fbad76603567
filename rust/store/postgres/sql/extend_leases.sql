-- Renew the leases a worker still holds, on the database clock; returns the ids still held.
UPDATE ferroq_jobs AS j
SET lease_expires_at = now() + $3 * interval '1 second'
FROM unnest($1::int8[], $2::int8[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
