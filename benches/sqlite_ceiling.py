"""SQL ceilings for SQLite: what a bare jobs table allows, with no queue library involved.

    python benches/sqlite_ceiling.py                 # 200,000 rows
    python benches/sqlite_ceiling.py --jobs 500000 --batch 500

The SQLite counterpart of the pgbench ceilings of benches/peers/sql/ (schema.sql, insert.sql,
claim_delete.sql), run with Python's built-in sqlite3 module on a fresh file in a temp dir:

* insert: ``--jobs`` rows inserted in transactions of ``--batch`` (500) rows, one ``executemany``
  per ``BEGIN IMMEDIATE`` ... ``COMMIT``;
* claim + delete: like a worker, one ``BEGIN IMMEDIATE`` transaction claims up to ``--batch``
  ready rows (``UPDATE ... SET state = 1, attempts = attempts + 1 WHERE id IN (SELECT id ...
  ORDER BY run_at, id LIMIT 500) RETURNING id``) and commits, then a second one deletes them
  by id (one ``DELETE ... WHERE id IN (SELECT value FROM json_each(?))``, as PostgreSQL's
  ``id = ANY(array)``); repeated until the table is empty.

Durability is the same as ferroq's SQLite store (rust/store/sqlite/mod.rs):
``journal_mode=WAL``, ``synchronous=FULL`` (ferroq's default; ``--synchronous normal`` for the
cheaper setting, durable across application crashes, where an OS crash may lose the last
commits), ``busy_timeout=5000`` ms, ``foreign_keys=ON``. One connection does
every write, as in ferroq (SQLite has one writer at a time, so more clients would only queue;
pgbench's -c 2 has no equivalent here). Times are integer microseconds, as in ferroq's schema.

Both are run ``--runs`` times (default 3) on the same file and the medians reported. Progress
goes to stderr; one JSON line goes to stdout:
``{"insert_rows_per_s": ..., "claim_delete_rows_per_s": ..., "settings": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time

SCHEMA = """
CREATE TABLE bench_jobs (
  id INTEGER PRIMARY KEY,
  queue TEXT NOT NULL DEFAULT 'default',
  state INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  run_at INTEGER NOT NULL,
  args TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX bench_jobs_ready ON bench_jobs (queue, run_at, id) WHERE state = 0;
"""
PRAGMAS = {"journal_mode": "WAL", "synchronous": "FULL", "busy_timeout": "5000", "foreign_keys": "ON"}
INSERT = "INSERT INTO bench_jobs (queue, run_at, args) VALUES ('default', ?, '{}')"
CLAIM = """
UPDATE bench_jobs SET state = 1, attempts = attempts + 1
WHERE id IN (SELECT id FROM bench_jobs WHERE state = 0 AND queue = 'default' AND run_at <= ?
             ORDER BY run_at, id LIMIT ?)
RETURNING id
"""
DELETE = "DELETE FROM bench_jobs WHERE id IN (SELECT value FROM json_each(?))"


def log(message: str) -> None:
    print(f"[sqlite_ceiling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now_us() -> int:
    return time.time_ns() // 1000


def connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every BEGIN/COMMIT below is explicit.
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    for name, value in PRAGMAS.items():
        conn.execute(f"PRAGMA {name} = {value}")
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"could not switch to WAL (journal_mode is {mode})")
    return conn


def bench_insert(conn: sqlite3.Connection, rows: int, batch: int) -> dict[str, float]:
    started = time.perf_counter()
    done = 0
    while done < rows:
        size = min(batch, rows - done)
        run_at = now_us()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, [(run_at,)] * size)
        conn.execute("COMMIT")
        done += size
    elapsed = time.perf_counter() - started
    return {"rows": done, "seconds": round(elapsed, 3), "rows_per_s": round(done / elapsed)}


def bench_claim_delete(conn: sqlite3.Connection, batch: int) -> dict[str, float]:
    started = time.perf_counter()
    done = cycles = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        ids = [row[0] for row in conn.execute(CLAIM, (now_us(), batch)).fetchall()]
        conn.execute("COMMIT")
        if not ids:
            break
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute(DELETE, (json.dumps(ids),)).rowcount
        conn.execute("COMMIT")
        if deleted != len(ids):
            raise RuntimeError(f"claimed {len(ids)} rows but deleted {deleted}")
        done += deleted
        cycles += 1
    elapsed = time.perf_counter() - started
    left = conn.execute("SELECT count(*) FROM bench_jobs").fetchone()[0]
    if left:
        raise RuntimeError(f"{left} rows left after the claim loop ran dry")
    return {"rows": done, "cycles": cycles, "seconds": round(elapsed, 3), "rows_per_s": round(done / elapsed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200_000, help="rows inserted, then claimed and deleted")
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500, as pgbench's)")
    parser.add_argument("--runs", type=int, default=3, help="runs of both ceilings; the median is reported (default 3)")
    parser.add_argument("--dir", default=None, help="directory of the temporary database file (default: system temp)")
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="as ferroq's ?synchronous= (default full)"
    )
    args = parser.parse_args(argv)
    PRAGMAS["synchronous"] = args.synchronous.upper()
    if args.jobs < 1 or args.batch < 1 or args.runs < 1:
        parser.error("--jobs, --batch and --runs must be positive")

    inserts: list[dict[str, float]] = []
    claims: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ferroq_sqlite_ceiling_", dir=args.dir) as directory:
        path = os.path.join(directory, "ceiling.db")
        conn = connect(path)
        try:
            conn.executescript(SCHEMA)
            for run in range(1, args.runs + 1):
                # Each run starts from an empty table (the claim loop empties it) and an empty WAL.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                inserts.append(bench_insert(conn, args.jobs, args.batch))
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                claims.append(bench_claim_delete(conn, args.batch))
                log(
                    f"run {run}/{args.runs}: insert {inserts[-1]['rows_per_s']:,.0f} rows/s, "
                    f"claim + delete {claims[-1]['rows_per_s']:,.0f} rows/s ({args.jobs:,} rows, {args.batch} per tx)"
                )
        finally:
            conn.close()

    result = {
        "insert_rows_per_s": round(statistics.median(r["rows_per_s"] for r in inserts)),
        "claim_delete_rows_per_s": round(statistics.median(r["rows_per_s"] for r in claims)),
        "insert_runs": inserts,
        "claim_delete_runs": claims,
        "settings": {
            "rows": args.jobs,
            "batch": args.batch,
            "runs": args.runs,
            **{name.lower(): value for name, value in PRAGMAS.items()},
            "sqlite_version": sqlite3.sqlite_version,
            "python": sys.version.split()[0],
        },
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
