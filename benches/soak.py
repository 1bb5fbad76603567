"""Soak test: worker CPU per job and worker RSS growth over a long run, on each backend.

    python benches/soak.py                                   # 1,000,000 jobs on PostgreSQL, then SQLite
    python benches/soak.py --backend sqlite --jobs 50000 --batch 5000
    python benches/soak.py --backend postgres --database-url postgresql://postgres@127.0.0.1:5432/test

The worker runs in a child process (this script with ``--worker``), so the CPU time and RSS
measured are the worker's own, not the enqueuer's. The child starts
``ferroq.App(url, concurrency=200, queues={"bench": 200}, job_retention=0, cleanup_interval=5)``
with an ``async def noop(job)`` performer for action "noop": completed jobs are deleted by the
worker's own retention cleanup every 5 s (the defaults keep them 7 days and clean up every 5
minutes), so the table holds at most a few seconds of completed rows instead of growing with
the run.

The parent enqueues the jobs in rounds of ``--batch`` (``create_jobs`` in chunks of 1,000) and
keeps at most two rounds unfinished: before each new round it polls the count of unfinished
jobs (state not completed/failed/discarded) until at most one round is left, then asks the
child, over its stdin/stdout, for a sample: its ``getrusage(RUSAGE_SELF)`` user+sys CPU (every
thread, Rust and Python), its current RSS (``VmRSS`` of /proc/self/status) and the worker's
count of written outcomes. The first 10% of the jobs (at least one round) are the warm-up; the
queue is drained completely at the end of the warm-up and at the end, and CPU per job and RSS
growth are measured between those two points. The worker's CPU includes the SQL work only on
SQLite (in process); on PostgreSQL the server's share runs in its own processes and is not
counted. Peak RSS is VmHWM (ru_maxrss would carry the parent's RSS over exec()).

Human-readable progress goes to stderr; at the end one JSON line goes to stdout, an object keyed
by backend (``{"postgres": {"worker_cpu_us_per_job": ..., "rss_growth_mb_after_warmup": ...,
"samples": [[jobs_done, rss_mb], ...], ...}, "sqlite": {...}}``). The
numbers of a shared 2-core machine are noisy; the growth of RSS over millions of jobs is the
signal to look at (a leak shows as steady growth after warm-up, not as a one-off step).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
QUEUE = "bench"
ACTION = "noop"
CONCURRENCY = 200
JOB_RETENTION = 0.0
CLEANUP_INTERVAL = 5.0
CHUNK = 1_000
POLL = 0.02
UNFINISHED_SQL = "SELECT count(*) FROM {table} WHERE state NOT IN ('completed', 'failed', 'discarded')"
COUNTS_SQL = "SELECT state, count(*) FROM {table} GROUP BY state"


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- worker (child process) --------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when the parent dies (belt and braces: the
    child also stops when its stdin closes)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent is already gone
        sys.exit(1)


def _status_kb(field: str) -> int:
    """A memory figure of /proc/self/status in kB: VmRSS (current RSS) or VmHWM (its peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _sample(app: Any) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    worker = app._worker  # the WorkerHandle of app.start(); App does not expose it publicly
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_kb": _status_kb("VmRSS"),
        # Not ru_maxrss: Linux carries it over exec(), so it would report the parent's RSS.
        "max_rss_kb": _status_kb("VmHWM"),
        "processed": int(worker.processed) if worker is not None else None,
        "in_flight": int(worker.in_flight) if worker is not None else None,
        "threads": len(os.listdir("/proc/self/task")),
    }


def worker_main(url: str) -> int:
    """Run a worker until stdin closes or says "stop"; answer each "sample" line with JSON."""
    _die_with_parent()
    import ferroq

    app = ferroq.App(
        url,
        concurrency=CONCURRENCY,
        queues={QUEUE: CONCURRENCY},
        job_retention=JOB_RETENTION,
        cleanup_interval=CLEANUP_INTERVAL,
    )

    async def noop(job: Any) -> None:
        return None

    app.performer(ACTION)(noop)

    app.start()
    out = sys.stdout
    out.write(json.dumps({"ready": True, **_sample(app)}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "sample":
                out.write(json.dumps(_sample(app)) + "\n")
                out.flush()
            elif command == "stop":
                break
    finally:
        app.close()
    out.write(json.dumps({"stopped": True}) + "\n")
    out.flush()
    return 0


class Worker:
    """The parent's handle on the child worker process."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        first = self._read()
        if not first.get("ready"):
            raise RuntimeError(f"worker did not start: {first}")
        self.initial = first

    def _read(self) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited unexpectedly (code {self.proc.poll()})")
            line = line.strip()
            if line.startswith("{"):  # anything else on stdout is not ours: skip it
                return dict(json.loads(line))

    def sample(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("sample\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


# -- databases -----------------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    count_unfinished: Callable[[], int]
    count_states: Callable[[], dict[str, int]]


@contextlib.contextmanager
def postgres_database(base_url: str) -> Iterator[Database]:
    import psycopg

    schema = f"ferroq_soak_{uuid.uuid4().hex[:12]}"
    table = f'"{schema}".ferroq_jobs'
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base_url else "?"
    try:
        with psycopg.connect(base_url, autocommit=True) as conn:

            def unfinished() -> int:
                row = conn.execute(UNFINISHED_SQL.format(table=table)).fetchone()
                return int(row[0]) if row else 0

            def states() -> dict[str, int]:
                rows = conn.execute(COUNTS_SQL.format(table=table)).fetchall()
                return {str(state): int(n) for state, n in rows}

            yield Database(f"{base_url}{separator}options=-csearch_path%3D{schema}", unfinished, states)
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="ferroq_soak_") as directory:
        path = os.path.join(directory, "soak.db")
        conn: sqlite3.Connection | None = None

        def connection() -> sqlite3.Connection:
            nonlocal conn
            if conn is None:  # the file exists only after migrate()
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            return conn

        def unfinished() -> int:
            return int(connection().execute(UNFINISHED_SQL.format(table="ferroq_jobs")).fetchone()[0])

        def states() -> dict[str, int]:
            rows = connection().execute(COUNTS_SQL.format(table="ferroq_jobs")).fetchall()
            return {str(state): int(n) for state, n in rows}

        try:
            yield Database(f"sqlite:///{path}", unfinished, states)
        finally:
            if conn is not None:
                conn.close()


# -- the soak run --------------------------------------------------------------------------------


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def soak(backend: str, db: Database, jobs: int, batch: int) -> dict[str, Any]:
    import ferroq

    # The enqueuing App must know "bench" is a concurrent queue: that is decided at insert.
    producer = ferroq.App(db.url, queues={QUEUE: CONCURRENCY})
    worker: Worker | None = None
    try:
        producer.migrate()
        worker = Worker(db.url)
        rounds = math.ceil(jobs / batch)
        warmup_rounds = max(1, math.ceil(rounds * 0.1))
        log(f"{backend}: {jobs:,} jobs in {rounds} rounds of {batch:,}; warm-up {warmup_rounds} round(s)")
        samples: list[dict[str, Any]] = [{"enqueued": 0, **worker.initial}]
        warm: dict[str, Any] | None = None
        enqueued = 0
        started = time.perf_counter()
        last_log = started

        def wait_until(at_most: int) -> None:
            while db.count_unfinished() > at_most:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited (code {worker.proc.returncode})")
                time.sleep(POLL)

        def take_sample() -> dict[str, Any]:
            sample = {"enqueued": enqueued, "seconds": round(time.perf_counter() - started, 3), **worker.sample()}
            samples.append(sample)
            return sample

        for round_number in range(rounds):
            size = min(batch, jobs - enqueued)
            for first in range(enqueued, enqueued + size, CHUNK):
                chunk = range(first, min(first + CHUNK, enqueued + size))
                producer.create_jobs([{"queue": QUEUE, "action": ACTION, "params": {"i": i}} for i in chunk])
            enqueued += size
            if round_number + 1 == warmup_rounds:
                wait_until(0)
                warm = take_sample()
                log(f"{backend}: warm-up done at {enqueued:,} jobs, RSS {_mb(warm['rss_kb'])} MB")
                continue
            wait_until(batch)  # at most one round left unfinished, one more about to come
            sample = take_sample()
            now = time.perf_counter()
            if now - last_log >= 5:
                last_log = now
                rate = sample["processed"] / (now - started) if sample["processed"] else 0.0
                log(
                    f"{backend}: {sample['processed']:,}/{jobs:,} done, {rate:,.0f} jobs/s, "
                    f"RSS {_mb(sample['rss_kb'])} MB, CPU {sample['cpu_s']:.1f} s"
                )
        wait_until(0)
        end = take_sample()
        elapsed = time.perf_counter() - started
        assert warm is not None
        states = db.count_states()
    finally:
        try:
            if worker is not None:
                worker.stop()
        finally:
            producer.close()

    measured_jobs = end["processed"] - warm["processed"]
    measured_seconds = end["seconds"] - warm["seconds"]
    measured_cpu = end["cpu_s"] - warm["cpu_s"]
    unfinished_or_lost = {s: n for s, n in states.items() if s != "completed"}
    result = {
        "backend": backend,
        "jobs": jobs,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(end["processed"] / elapsed),
        "processed": end["processed"],
        "warmup_jobs": warm["processed"],
        "measured_jobs": measured_jobs,
        "measured_jobs_per_s": round(measured_jobs / measured_seconds) if measured_seconds > 0 else None,
        "worker_cpu_us_per_job": round(measured_cpu / measured_jobs * 1e6, 2) if measured_jobs else None,
        "worker_cpu_us_per_job_all": round(end["cpu_s"] / end["processed"] * 1e6, 2) if end["processed"] else None,
        "worker_cpu_percent": round(measured_cpu / measured_seconds * 100) if measured_seconds > 0 else None,
        "rss_mb_start": _mb(samples[0]["rss_kb"]),
        "rss_mb_after_warmup": _mb(warm["rss_kb"]),
        "rss_mb_end": _mb(end["rss_kb"]),
        "rss_growth_mb_after_warmup": _mb(end["rss_kb"] - warm["rss_kb"]),
        "rss_mb_max_sampled": _mb(max(s["rss_kb"] for s in samples)),
        # VmHWM, the kernel's high-water mark of RSS: catches peaks between samples.
        "rss_mb_peak_during_warmup": _mb(warm["max_rss_kb"]),
        "rss_mb_peak": _mb(end["max_rss_kb"]),
        "threads_end": end["threads"],
        "rows_left": states,  # completed rows not yet removed by the retention cleanup
        "not_completed": unfinished_or_lost,  # should be empty: failed, discarded or stuck jobs
        "settings": {
            "concurrency": CONCURRENCY,
            "queues": {QUEUE: CONCURRENCY},
            "job_retention": JOB_RETENTION,
            "cleanup_interval": CLEANUP_INTERVAL,
            "create_jobs_chunk": CHUNK,
        },
        "samples": [[s["processed"], _mb(s["rss_kb"])] for s in samples],
    }
    log(
        f"{backend}: {end['processed']:,} jobs in {elapsed:.1f} s; worker CPU "
        f"{result['worker_cpu_us_per_job']} us/job after warm-up; RSS {result['rss_mb_after_warmup']} -> "
        f"{result['rss_mb_end']} MB (max {result['rss_mb_max_sampled']} MB)"
    )
    if unfinished_or_lost:
        log(f"{backend}: WARNING jobs not completed: {unfinished_or_lost}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in all (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="jobs enqueued per round (default 10,000)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("FERROQ_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
        help=f"PostgreSQL server; a fresh schema is created and dropped (default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.jobs < 1 or args.batch < 1:
        parser.error("--jobs and --batch must be positive")

    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    for backend in backends:
        database = postgres_database(args.database_url) if backend == "postgres" else sqlite_database()
        with database as db:
            results[backend] = soak(backend, db, args.jobs, args.batch)
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
