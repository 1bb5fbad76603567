-- Insert ceiling: 500 rows per transaction.
\set batch 500
INSERT INTO bench_jobs (args) SELECT '{}'::jsonb FROM generate_series(1, :batch::int);
