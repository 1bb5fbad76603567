state = 'available', run_at = {{now}}, next_attempt_at = NULL, done_at = NULL, head = NULL,
    cancel_requested_at = NULL, max_attempts = max(max_attempts, attempts + 1)
