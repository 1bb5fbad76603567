"""Does a claim cost what it hands out, however many queues exist? (issue 9, point 11)

    python benches/queue_cardinality.py                       # both backends, the full curve
    python benches/queue_cardinality.py --backends sqlite --blocked 0,100000

For each backend and each point of the curve, on a fresh database (a new PostgreSQL schema, a
new SQLite file):

1. ``--blocked`` blocking queues are made whose only job is a retry due in an hour (inserted,
   then turned ``retryable`` with one UPDATE, as a failed first attempt leaves it); an
   untimed ``drain()`` that finds nothing lets the workers place them; then the table is
   vacuumed and analyzed, as autovacuum would after such a change (on every point, so the
   base too);
2. ``--jobs`` no-op jobs are enqueued over ``ready`` blocking queues, round-robin (untimed);
3. ``drain()`` runs them at ``--concurrency`` (timed): jobs/s.

The targets: 20,000 one-job queues drain at >= 80% of the rate of 20,000 jobs over 1,000
queues, and 100,000 blocked queues slow that drain by <= 20%. Each row prints the rate and
its ratio to the first row of its backend (1,000 ready queues, none blocked). Absolute rates
on a shared machine are noise; the ratios in one run are the result. Progress goes to stderr,
the table to stdout, and ``--json`` writes the rows to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

import ferroq

INSERT_BATCH = 10_000


def log(message: str) -> None:
    print(f"[queue_cardinality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_search_path(base_url: str, schema: str) -> str:
    parts = urlsplit(base_url)
    option = "options=" + quote(f"-csearch_path={schema}", safe="-")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class Database:
    """A fresh database for one point of the curve, and a raw connection to it."""

    def __init__(self, backend: str, base_url: str, tmpdir: str) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.path = os.path.join(tmpdir, f"jobs-{uuid.uuid4().hex[:8]}.db")
            self.url = f"sqlite:///{self.path}"
        else:
            self.base_url = base_url
            self.schema = f"ferroq_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(base_url, autocommit=True) as admin:
                admin.execute(f'CREATE SCHEMA "{self.schema}"')
            self.url = with_search_path(base_url, self.schema)

    def execute(self, sql: str) -> None:
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                conn.execute(sql)
        else:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(sql)

    def vacuum(self) -> None:
        """What autovacuum does after a large change (this machine's PostgreSQL runs with it
        off): clear the dead index entries the setup left, and give the planner statistics."""
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                conn.execute("ANALYZE")
        else:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE ferroq_jobs")

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.remove(self.path + suffix)
        else:
            with psycopg.connect(self.base_url, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def enqueue(app: ferroq.App, specs) -> None:
    batch = []
    for spec in specs:
        batch.append(spec)
        if len(batch) == INSERT_BATCH:
            app.create_jobs(batch)
            batch = []
    if batch:
        app.create_jobs(batch)


def measure(backend: str, base_url: str, tmpdir: str, jobs: int, ready: int, blocked: int, concurrency: int) -> float:
    db = Database(backend, base_url, tmpdir)
    app = ferroq.App(db.url, concurrency=concurrency, poll_interval=60, cleanup_interval=None)
    try:
        app.migrate()

        @app.performer("noop")
        async def noop(job) -> None:
            return None

        if blocked:
            started = time.perf_counter()
            enqueue(app, ({"queue": f"blocked-{i}", "action": "noop", "delay": 3600} for i in range(blocked)))
            db.execute(
                "UPDATE ferroq_jobs SET state = 'retryable', attempts = 1, next_attempt_at = run_at, "
                "error = 'bench: a failed first attempt' WHERE queue LIKE 'blocked-%'"
            )
            assert app.drain() == 0
            log(f"{backend}: {blocked:,} blocked queues made and placed in {time.perf_counter() - started:.1f} s")
        db.vacuum()
        enqueue(app, ({"queue": f"ready-{i % ready}", "action": "noop"} for i in range(jobs)))
        started = time.perf_counter()
        done = app.drain()
        elapsed = time.perf_counter() - started
        assert done == jobs, f"drained {done} of {jobs}"
        return jobs / elapsed
    finally:
        app.close()
        db.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--points",
        default="1000:0,20000:0,20000:100000,20000:1000000",
        help="comma-separated ready_queues:blocked_queues pairs; the first is each backend's base",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    points = [tuple(int(n) for n in point.split(":")) for point in args.points.split(",")]
    rows = []
    print(f"{'backend':<9} {'ready queues':>12} {'blocked queues':>14} {'jobs/s':>8} {'vs base':>8}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ferroq-cardinality-") as tmpdir:
        for backend in args.backends.split(","):
            base = None
            for ready, blocked in points:
                log(f"{backend}: {args.jobs:,} jobs over {ready:,} queues, {blocked:,} blocked queues")
                rate = measure(backend, args.database_url, tmpdir, args.jobs, ready, blocked, args.concurrency)
                base = base or rate
                rows.append(
                    {
                        "backend": backend,
                        "ready_queues": ready,
                        "blocked_queues": blocked,
                        "jobs": args.jobs,
                        "concurrency": args.concurrency,
                        "jobs_per_s": round(rate),
                        "vs_base": round(rate / base, 3),
                    }
                )
                print(f"{backend:<9} {ready:>12,} {blocked:>14,} {rate:>8,.0f} {rate / base:>7.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
