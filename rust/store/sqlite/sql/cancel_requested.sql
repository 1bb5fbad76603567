-- Of the attempts a worker holds (?1: a JSON array of [id, lease token]), those whose cancel
-- was requested.
SELECT j.id
FROM ferroq_jobs AS j JOIN json_each(?1) AS l
     ON j.id = json_extract(l.value, '$[0]') AND j.lease_token = json_extract(l.value, '$[1]')
WHERE j.state = 'running' AND j.cancel_requested_at IS NOT NULL
