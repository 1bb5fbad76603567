-- request_cancel.sql for every running job the filter matches: each one's worker interrupts its
-- performer and ends it discarded. A second request keeps the first one's time.
UPDATE ferroq_jobs AS j
SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
WHERE {{filter}}
  AND j.state = 'running'
