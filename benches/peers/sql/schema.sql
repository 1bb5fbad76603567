-- Bare tables for the pgbench SQL ceilings (performance.md 5.6); no queue library involved.
CREATE TABLE bench_jobs (
  id bigserial PRIMARY KEY,
  queue text NOT NULL DEFAULT 'default',
  state smallint NOT NULL DEFAULT 0,
  attempts int NOT NULL DEFAULT 0,
  run_at timestamptz NOT NULL DEFAULT now(),
  args jsonb NOT NULL DEFAULT '{}'
) WITH (fillfactor = 70);
CREATE INDEX bench_jobs_ready ON bench_jobs (queue, run_at, id) WHERE state = 0;

-- FIFO per key: jobs in key order of id; one row per key says whether a job of it runs.
CREATE TABLE bench_fifo (
  id bigserial PRIMARY KEY,
  key int NOT NULL,
  state smallint NOT NULL DEFAULT 0,
  attempts int NOT NULL DEFAULT 0,
  run_at timestamptz NOT NULL DEFAULT now(),
  args jsonb NOT NULL DEFAULT '{}'
) WITH (fillfactor = 70);
CREATE INDEX bench_fifo_head ON bench_fifo (key, id);
CREATE TABLE bench_fifo_keys (
  key int PRIMARY KEY,
  running boolean NOT NULL DEFAULT false
) WITH (fillfactor = 50);
