state = 'available', run_at = now(), next_attempt_at = NULL, done_at = NULL, head = NULL,
    cancel_requested_at = NULL, max_attempts = greatest(j.max_attempts, j.attempts + 1)
