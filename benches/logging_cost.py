"""What the worker's logging costs a drain (issue 12, point 7): the `ferroq` logger at INFO,
written to a file, against logging off; the bound is 5%.

    python benches/logging_cost.py                            # SQLite and PostgreSQL, 5 rounds
    python benches/logging_cost.py --backends sqlite --rounds 7 --jobs 20000

Each round drains ``--jobs`` no-op jobs of one concurrent queue at concurrency 200 (as
``benches/test_throughput.py::test_drain_concurrent_queue``) once with logging off and once at
INFO, in alternating order, on the same database; the inserts are not timed. It prints the
median jobs/s and the median CPU time per job (all of the process's threads) of each setting,
and their ratios: on a shared machine the CPU time is the steadier figure. At INFO a completed
job logs nothing (its line is DEBUG), so the ratios measure what the engine pays per job to
find that out. Run it with the Python of another build (e.g. the commit before the logging)
to compare builds: ``--settings off`` there and here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

import ferroq

BULK = 1_000


def with_search_path(base_url: str, schema: str) -> str:
    parts = urlsplit(base_url)
    option = "options=" + quote(f"-csearch_path={schema}", safe="-")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def set_logging(on: bool, log_file: str) -> None:
    logger = logging.getLogger("ferroq")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    if on:
        logger.addHandler(logging.FileHandler(log_file))
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.CRITICAL + 10)


def drain_rate(app: ferroq.App, jobs: int) -> tuple[float, float]:
    """Jobs/s, and CPU microseconds per job."""
    for _ in range(0, jobs, BULK):
        app.create_jobs([{"queue": "bench", "action": "noop"}] * BULK)
    started, cpu_started = time.perf_counter(), time.process_time()
    ran = app.drain()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert ran == jobs, f"drained {ran} of {jobs}"
    return jobs / elapsed, cpu / jobs * 1e6


def measure(
    url: str, jobs: int, rounds: int, log_file: str, settings: list[str]
) -> dict[str, list[tuple[float, float]]]:
    app = ferroq.App(url, concurrency=200, queues={"bench": 200})
    app.migrate()

    @app.performer("noop")
    async def noop(job: ferroq.Job) -> None:
        await asyncio.sleep(0)

    rates: dict[str, list[tuple[float, float]]] = {setting: [] for setting in settings}
    drain_rate(app, BULK)  # warm up: connections, prepared statements
    for round_number in range(rounds):
        order = settings if round_number % 2 == 0 else settings[::-1]
        for setting in order:
            set_logging(setting == "info", log_file)
            rates[setting].append(drain_rate(app, jobs))
            rate, cpu = rates[setting][-1]
            print(f"  round {round_number + 1} {setting}: {rate:,.0f} jobs/s, {cpu:.1f} us CPU/job", file=sys.stderr)
    set_logging(False, log_file)
    app.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settings", default="off,info", help="off, info, or both (compared)")
    parser.add_argument(
        "--url", default=os.environ.get("FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, "ferroq.log")
        for backend in args.backends.split(","):
            schema = None
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/bench.db"
            else:
                schema = f"ferroq_logbench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(args.url, autocommit=True) as admin:
                    admin.execute(f'CREATE SCHEMA "{schema}"')
                url = with_search_path(args.url, schema)
            try:
                print(f"{backend}: {args.rounds} rounds of {args.jobs:,} jobs", file=sys.stderr)
                rates = measure(url, args.jobs, args.rounds, log_file, args.settings.split(","))
            finally:
                if schema is not None:
                    with psycopg.connect(args.url, autocommit=True) as admin:
                        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            medians = {
                setting: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
                for setting, runs in rates.items()
            }
            line = ", ".join(f"{s} {r:,.0f} jobs/s {c:.1f} us CPU/job" for s, (r, c) in medians.items())
            if len(medians) == 2:
                (_, (rate_a, cpu_a)), (_, (rate_b, cpu_b)) = medians.items()
                line += f"; second/first: {rate_b / rate_a:.3f}x jobs/s, {cpu_b / cpu_a:.3f}x CPU/job"
            print(f"{backend} ({ferroq.__file__}): {line}")


if __name__ == "__main__":
    main()
