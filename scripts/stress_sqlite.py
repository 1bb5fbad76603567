"""Several processes on one SQLite file: worker processes and an enqueuing process at once.

    python scripts/stress_sqlite.py [--workers 3] [--jobs 3000] [--queues 30]

Each worker appends (job, queue, attempt, start, end) to its own ledger file; afterwards the
script checks, from the ledgers and the database: locking errors surfaced (enqueuer
exceptions, worker log lines, job errors), jobs lost (not completed), jobs run twice, and
overlapping runs within a blocking queue. It prints one JSON line and exits non-zero when
any of those is not zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

BLOCKING_SHARE = 0.8  # the rest goes to one concurrent queue


def make_app(path: str):
    import ferroq

    return ferroq.App(f"sqlite:///{path}", concurrency=4, queues={"bulk": 4}, lease_ttl=5, poll_interval=2)


def worker(path: str, ledger_path: str) -> None:
    app = make_app(path)
    ledger = open(ledger_path, "a", buffering=1)

    @app.performer("work")
    def work(job):
        start = time.time_ns()
        time.sleep(random.uniform(0, 0.004))
        ledger.write(f"{job.id} {job.queue} {job.attempts} {start} {time.time_ns()}\n")

    app.run()


def enqueue(path: str, jobs: int, queues: int, errors_path: str) -> None:
    app = make_app(path)
    errors = 0
    created = 0
    batch = 50
    while created < jobs:
        specs = []
        for _ in range(min(batch, jobs - created)):
            queue = f"q{random.randrange(queues)}" if random.random() < BLOCKING_SHARE else "bulk"
            specs.append({"queue": queue, "action": "work", "params": {"n": created + len(specs)}})
        try:
            app.create_jobs(specs)
            created += len(specs)
        except Exception as exc:  # any surfaced error counts against the run
            errors += 1
            print(f"enqueue error: {exc!r}", file=sys.stderr)
        time.sleep(0.002)
    with open(errors_path, "w") as f:
        f.write(str(errors))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--queues", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--role", choices=["main", "worker", "enqueue"], default="main")
    parser.add_argument("--path")
    parser.add_argument("--ledger")
    args = parser.parse_args()
    if args.role == "worker":
        worker(args.path, args.ledger)
        return 0
    if args.role == "enqueue":
        enqueue(args.path, args.jobs, args.queues, args.ledger)
        return 0

    work_dir = tempfile.mkdtemp(prefix="ferroq-stress-")
    path = os.path.join(work_dir, "jobs.db")
    make_app(path).migrate()
    me = os.path.abspath(__file__)
    logs = [open(os.path.join(work_dir, f"worker{i}.log"), "w") for i in range(args.workers)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                me,
                "--role",
                "worker",
                "--path",
                path,
                "--ledger",
                os.path.join(work_dir, f"ledger{i}.txt"),
            ],
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(args.workers)
    ]
    started = time.monotonic()
    enqueuer = subprocess.run(
        [
            sys.executable,
            me,
            "--role",
            "enqueue",
            "--path",
            path,
            "--jobs",
            str(args.jobs),
            "--queues",
            str(args.queues),
            "--ledger",
            os.path.join(work_dir, "enqueue_errors.txt"),
        ],
        capture_output=True,
        text=True,
    )
    db = sqlite3.connect(path, timeout=30)
    while time.monotonic() - started < args.timeout:
        open_jobs = db.execute(
            "SELECT count(*) FROM ferroq_jobs WHERE state NOT IN ('completed', 'failed', 'discarded')"
        ).fetchone()[0]
        if open_jobs == 0:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    for process in workers:
        process.send_signal(signal.SIGTERM)
    for process in workers:
        process.wait(timeout=60)
    for log in logs:
        log.close()

    runs: dict[int, list[tuple[str, int, int, int]]] = {}
    for i in range(args.workers):
        ledger = os.path.join(work_dir, f"ledger{i}.txt")
        if os.path.exists(ledger):
            for line in open(ledger):
                job_id, queue, attempt, start, end = line.split()
                runs.setdefault(int(job_id), []).append((queue, int(attempt), int(start), int(end)))
    states = dict(db.execute("SELECT state, count(*) FROM ferroq_jobs GROUP BY state").fetchall())
    stored = db.execute("SELECT count(*) FROM ferroq_jobs").fetchone()[0]
    job_errors = db.execute(
        "SELECT count(*) FROM ferroq_jobs WHERE error LIKE '%locked%' OR error LIKE '%busy%'"
    ).fetchone()[0]
    worker_lines = "".join(open(os.path.join(work_dir, f"worker{i}.log")).read() for i in range(args.workers))
    worker_lock_lines = sum(
        1 for line in worker_lines.splitlines() if "locked" in line.lower() or "busy" in line.lower()
    )
    enqueue_errors = int(open(os.path.join(work_dir, "enqueue_errors.txt")).read() or 0)
    by_queue: dict[str, list[tuple[int, int, int]]] = {}
    for job_id, attempts in runs.items():
        for queue, _attempt, start, end in attempts:
            if queue != "bulk":
                by_queue.setdefault(queue, []).append((start, end, job_id))
    overlaps = 0
    for intervals in by_queue.values():
        intervals.sort()
        for (_s1, e1, _), (s2, _e2, _) in zip(intervals, intervals[1:], strict=False):
            if s2 < e1:
                overlaps += 1
    report = {
        "scenario": "sqlite_multiprocess",
        "worker_processes": args.workers,
        "enqueuing_processes": 1,
        "jobs_enqueued": args.jobs,
        "jobs_stored": stored,
        "states": states,
        "seconds": round(elapsed, 2),
        "locking_errors_surfaced": enqueue_errors + job_errors + worker_lock_lines,
        "lost": args.jobs - states.get("completed", 0),
        "ran_twice": sum(1 for attempts in runs.values() if len(attempts) > 1),
        "blocking_queue_overlaps": overlaps,
        "enqueuer_exit": enqueuer.returncode,
    }
    print(json.dumps(report))
    bad = report["locking_errors_surfaced"] or report["lost"] or report["ran_twice"] or overlaps or enqueuer.returncode
    if bad:
        print(f"work dir kept for inspection: {work_dir}", file=sys.stderr)
        if enqueuer.stderr:
            print(enqueuer.stderr[-2000:], file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
