-- Of the attempts a worker holds ($1 ids, $2 lease tokens), those whose cancel was requested.
SELECT j.id
FROM ferroq_jobs AS j JOIN unnest($1::int8[], $2::int8[]) AS l(id, token)
     ON j.id = l.id AND j.lease_token = l.token
WHERE j.state = 'running' AND j.cancel_requested_at IS NOT NULL
