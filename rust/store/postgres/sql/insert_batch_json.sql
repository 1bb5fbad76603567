-- The rows of insert_jobs.sql from one JSON text ($2, see store/encode.rs) and the batch's
-- params end to end ($3: JSON text as UTF-8, bytes as given), for a caller's connection: any
-- Python driver binds a string and bytes, whatever it does with arrays and timestamps. Each
-- job's entry gives its slice of $3 (offset from 0, length); a bytes job's params are JSON null.
-- A unique batch's entries have three more values (see insert_unique_jobs.sql).
(SELECT b.job ->> 0 AS queue, b.job ->> 1 AS action,
        CASE WHEN (b.job ->> 2)::bool
             THEN convert_from(substring($3::bytea FROM (b.job ->> 10)::int4 + 1 FOR (b.job ->> 11)::int4), 'UTF8')
             ELSE 'null'
        END AS params,
        (b.job ->> 3)::bool AS blocking, (b.job ->> 4)::int4 AS priority,
        (b.job ->> 5)::int4 AS max_attempts, (b.job ->> 6)::float8 AS timeout,
        (b.job ->> 7)::float8 AS max_backoff,
        -- interval * number computes in float8, which holds whole microseconds only up to 2**53
        -- (the year 2255): whole seconds and the microseconds left over, each exact.
        timestamptz 'epoch' + ((b.job ->> 8)::int8 / 1000000) * interval '1 second'
            + ((b.job ->> 8)::int8 % 1000000) * interval '1 microsecond' AS scheduled_at,
        (b.job ->> 9)::float8 AS delay,
        CASE WHEN NOT (b.job ->> 2)::bool
             THEN substring($3::bytea FROM (b.job ->> 10)::int4 + 1 FOR (b.job ->> 11)::int4)
        END AS params_bytes,
        {{unique_fields}}b.ord
 FROM jsonb_array_elements($2::text::jsonb) WITH ORDINALITY AS b(job, ord)) AS i
