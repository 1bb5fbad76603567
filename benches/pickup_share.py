"""The worker's share of idle pickup: a worker runs here, a child process enqueues one job
every --gap seconds, and each job's latency is from create_job returning in the child (its
commit acknowledged) to its performer starting here (one machine, one clock). The enqueue
itself, which every system pays alike, is left out. SQLite by default (a file in a temporary
directory); any database URL works:

    python benches/pickup_share.py --jobs 200 [--url sqlite:////tmp/pickup.db?synchronous=normal]
    python benches/pickup_share.py --jobs 200 --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import ferroq

ENQUEUER = textwrap.dedent(
    """
    import sys, time, ferroq
    app = ferroq.App(sys.argv[1])
    for i in range(int(sys.argv[2])):
        time.sleep(float(sys.argv[3]))
        job = app.create_job(f"q{i % 10}", "a", {"i": i})
        print(job.id, time.time(), flush=True)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--url")
    parser.add_argument("--wakeup-interval", type=float, default=None)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="ferroq-pickup-")
    url = args.url or f"sqlite:///{os.path.join(directory, 'jobs.db')}"
    started: dict[int, float] = {}
    done = threading.Event()
    app = ferroq.App(url, poll_interval=60, wakeup_interval=args.wakeup_interval, concurrency=10)

    @app.performer("a")
    def a(job: ferroq.Job) -> None:
        started[job.id] = time.time()
        if len(started) >= args.jobs:
            done.set()

    app.migrate()
    app.start()
    time.sleep(0.5)
    cpu0 = time.process_time()
    child = subprocess.run(
        [sys.executable, "-c", ENQUEUER, url, str(args.jobs), str(args.gap)],
        capture_output=True,
        text=True,
        check=True,
    )
    done.wait(30)
    cpu = time.process_time() - cpu0
    idle0 = time.process_time()
    time.sleep(2.0)
    idle_cpu = (time.process_time() - idle0) / 2.0
    app.stop()
    app.close()
    latencies = []
    for line in child.stdout.split("\n"):
        if line.strip():
            job_id, at = line.split()
            latencies.append((started[int(job_id)] - float(at)) * 1000)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(
        f"{len(latencies)} jobs from another process: pickup p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, "
        f"max {latencies[-1]:.2f} ms; worker CPU {cpu * 1000 / len(latencies):.2f} ms/job meanwhile, "
        f"idle worker CPU {idle_cpu * 100:.2f}% of a core"
    )


if __name__ == "__main__":
    main()
