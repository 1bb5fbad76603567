"""Throughput and latency through the public Python API, on both backends.

    pytest benches/ --benchmark-only                 # all
    pytest benches/ --benchmark-only -k drain        # one scenario

Jobs/s and latency percentiles are recorded in each benchmark's extra_info (shown with
--benchmark-verbose or saved with --benchmark-json). Absolute numbers on a shared 2-core
machine are noise; compare ratios measured in the same run (benches/peers/ for the peers).
"""

from __future__ import annotations

import statistics
import threading
import time

N = 20_000
BULK = 1_000


def _per_second(benchmark, jobs: int) -> None:
    benchmark.extra_info["jobs"] = jobs
    benchmark.extra_info["jobs_per_second"] = round(jobs / benchmark.stats.stats.median)


def test_single_enqueue(benchmark, make_app):
    app = make_app()
    benchmark(app.create_job, "q", "noop", {"n": 1})
    _per_second(benchmark, 1)


def test_bulk_enqueue_1000_per_call(benchmark, make_app):
    app = make_app()
    batch = [{"queue": "bench", "action": "noop", "params": {"n": i}} for i in range(BULK)]
    benchmark.pedantic(app.create_jobs, args=(batch,), rounds=20, iterations=1)
    _per_second(benchmark, BULK)


def _drain(benchmark, app, specs_for_batch) -> None:
    @app.performer("noop")
    async def noop(job):
        return None

    def insert():
        for start in range(0, N, BULK):
            app.create_jobs(specs_for_batch(start))

    ran = []
    benchmark.pedantic(lambda: ran.append(app.drain()), setup=insert, rounds=3, iterations=1)
    assert ran == [N] * 3, f"every round must run all {N} jobs, ran {ran}"
    _per_second(benchmark, N)


def test_drain_concurrent_queue(benchmark, make_app):
    app = make_app(concurrency=200, queues={"bench": 200})
    _drain(benchmark, app, lambda start: [{"queue": "bench", "action": "noop"}] * BULK)


def test_drain_1000_blocking_queues(benchmark, make_app):
    app = make_app(concurrency=200)
    _drain(
        benchmark,
        app,
        lambda start: [{"queue": f"k{(start + i) % 1000}", "action": "noop"} for i in range(BULK)],
    )


def test_idle_pickup_latency(benchmark, make_app):
    """One job at a time into an idle worker; each only after the previous ran."""
    app = make_app(concurrency=10, poll_interval=60)
    started = threading.Event()
    latencies: list[float] = []

    @app.performer("ping")
    async def ping(job):
        latencies.append((time.perf_counter_ns() - job.params["t"]) / 1e6)
        started.set()

    def measure():
        for _ in range(200):
            started.clear()
            app.create_job("ping", "ping", {"t": time.perf_counter_ns()})
            assert started.wait(10), "a job was not picked up within 10 s"
            time.sleep(0.005)  # the worker goes idle again

    with app:
        for _ in range(5):  # warm-up, not measured
            started.clear()
            app.create_job("ping", "ping", {"t": time.perf_counter_ns()})
            started.wait(10)
        latencies.clear()
        benchmark.pedantic(measure, rounds=1, iterations=1)
    ordered = sorted(latencies)
    benchmark.extra_info["pickup_ms_p50"] = round(statistics.median(ordered), 3)
    benchmark.extra_info["pickup_ms_p99"] = round(ordered[int(len(ordered) * 0.99) - 1], 3)
    benchmark.extra_info["pickup_ms_max"] = round(ordered[-1], 3)
