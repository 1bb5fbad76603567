-- The rows of insert_jobs.sql from parallel arrays ($2..$12), bound in binary by the pool's
-- own connections: the fastest way in for a large batch. A unique batch binds three more
-- ($13..$15, see insert_unique_jobs.sql).
unnest($2::text[], $3::text[], $4::text[], $5::bool[], $6::int4[], $7::int4[],
       $8::float8[], $9::float8[], $10::timestamptz[], $11::float8[], $12::bytea[]{{unique_arrays}})
     WITH ORDINALITY AS i(queue, action, params, blocking, priority, max_attempts,
                          timeout, max_backoff, scheduled_at, delay, params_bytes{{unique_names}}, ord)
