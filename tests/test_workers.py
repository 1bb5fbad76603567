"""Worker processes (``ferroq worker module:app`` and ``app.run()``): graceful drain on
SIGTERM/SIGINT, release of jobs past stop_timeout, and several workers on one database."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
from helpers import subprocess_env, wait_for_job, wait_until

import ferroq

TARGET = "apps.ledger_app:app"


def _start(processes, database_url, launcher, **env):
    if launcher == "cli":
        return processes.worker(TARGET, database_url, **env)
    return processes.spawn(
        [sys.executable, "-c", "from apps.ledger_app import app; app.run()"],
        subprocess_env(database_url, **env),
        name="run",
    )


@pytest.mark.parametrize(
    "launcher, sig",
    [("cli", signal.SIGTERM), ("cli", signal.SIGINT), ("run", signal.SIGTERM)],
    ids=["worker-SIGTERM", "worker-SIGINT", "run-SIGTERM"],
)
def test_worker_drains_on_signal(app_factory, database_url, ledger, processes, launcher, sig):
    producer = app_factory()
    worker = _start(processes, database_url, launcher, TEST_STOP_TIMEOUT=20)
    in_flight = producer.create_job("q", "record", {"sleep": 2})
    behind = producer.create_job("q", "record")
    wait_until(lambda: ledger.starts(in_flight.id), timeout=20, message=processes.describe)

    os.kill(worker.pid, sig)
    time.sleep(0.5)  # let the worker take the signal before the next job arrives
    late = producer.create_job("other", "record")

    rc = worker.wait(timeout=25)
    assert rc == 0, processes.describe()
    assert producer.get_job(in_flight.id).state == "completed"
    assert len(ledger.finishes(in_flight.id)) == 1
    for job in (behind, late):
        assert producer.get_job(job.id).state == "available", "a draining worker claimed a job"
        assert ledger.starts(job.id) == []


@pytest.mark.parametrize("action", ["record", "record_async"])
def test_job_running_past_stop_timeout_is_released(app_factory, database_url, ledger, processes, action):
    producer = app_factory()
    worker = processes.worker(TARGET, database_url, TEST_STOP_TIMEOUT=1)
    job = producer.create_job("q", action, {"sleep": 30}, max_attempts=1)
    wait_until(lambda: ledger.starts(job.id), timeout=20, message=processes.describe)

    signalled = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    worker.wait(timeout=15)
    assert time.monotonic() - signalled < 1 + 6, "stop_timeout did not bound the shutdown"

    released = producer.get_job(job.id)
    assert released.state == "available", processes.describe()
    assert released.attempts == 0, "the interrupted attempt was counted"

    # Another worker runs it; with max_attempts=1 this is only possible if nothing was burned.
    processes.worker(TARGET, database_url, TEST_SLEEP_CAP=0)
    done = wait_for_job(producer, job.id, "completed", timeout=20)
    assert done.attempts == 1
    assert [s["attempt"] for s in ledger.starts(job.id)] == [1, 1]


def test_cli_concurrency_option(app_factory, database_url, ledger, processes):
    producer = app_factory()
    jobs = producer.create_jobs([{"queue": f"q{i}", "action": "record", "params": {"sleep": 0.3}} for i in range(4)])
    processes.worker(TARGET, database_url, "--concurrency", "1", TEST_CONCURRENCY=4)
    for job in jobs:
        wait_for_job(producer, job.id, "completed", timeout=20)
    overlapping = ledger.overlaps(same_queue=False)
    assert overlapping == [], "--concurrency 1 ran jobs at the same time"


def test_two_workers_run_every_job_once_without_overlap(app_factory, database_url, ledger, processes, db):
    producer = app_factory()
    workers = [processes.worker(TARGET, database_url, TEST_CONCURRENCY=4) for _ in range(2)]
    rnd = random.Random(7)
    jobs = producer.create_jobs(
        [{"queue": f"q{i % 20}", "action": "record", "params": {"sleep": rnd.uniform(0, 0.02)}} for i in range(200)]
    )

    def all_done():
        return db.execute("SELECT count(*) FROM ferroq_jobs WHERE state = 'completed'").fetchone()[0] == 200

    wait_until(all_done, timeout=90, interval=0.2, message=processes.describe)
    assert all(w.poll() is None for w in workers), processes.describe()

    starts = ledger.starts()
    per_job = Counter(r["job_id"] for r in starts)
    assert set(per_job) == {j.id for j in jobs}
    assert [j for j, n in per_job.items() if n != 1] == [], "jobs ran more than once"
    assert len(ledger.finishes()) == 200
    assert ledger.overlaps() == [], "two jobs of one blocking queue ran at the same time"

    # FIFO within each queue: jobs started in the order they were created.
    sequence = {j.id: j.sequence for j in jobs}
    by_queue = defaultdict(list)
    for row in starts:
        by_queue[row["queue"]].append(sequence[row["job_id"]])
    for queue, seqs in by_queue.items():
        assert seqs == sorted(seqs), f"FIFO violated in {queue}"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_in_process_stop_releases_jobs_past_the_timeout(app_factory, kind):
    app = app_factory(poll_interval=60)
    started = []

    if kind == "sync":

        @app.performer("long")
        def long(job):
            started.append(job.attempts)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                time.sleep(0.05)
    else:
        import asyncio

        @app.performer("long")
        async def long(job):
            started.append(job.attempts)
            await asyncio.sleep(30)

    job = app.create_job("q", "long", max_attempts=1)
    app.start()
    wait_until(lambda: started)
    t0 = time.monotonic()
    app.stop(timeout=0.5)
    assert time.monotonic() - t0 < 6, "stop(timeout=0.5) did not return in time"
    released = app.get_job(job.id)
    assert (released.state, released.attempts) == ("available", 0)


@pytest.mark.parametrize("timeout", [-1, float("inf"), "soon"])
def test_a_refused_stop_timeout_leaves_the_worker_running(app_factory, timeout):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("a")
    def a(job):
        ran.append(job.id)

    app.start()
    with pytest.raises(ferroq.ConfigurationError):
        app.stop(timeout)
    assert app.running
    job = app.create_job("q", "a")
    wait_for_job(app, job.id, "completed")
    app.stop(5)
    assert not app.running and ran == [job.id]


def test_a_retry_written_by_one_worker_wakes_an_idle_one_when_due(app_factory):
    # Both workers poll only every minute: the idle one must learn of the retry otherwise.
    failing = app_factory(poll_interval=60, worker_name="failing")
    idle = app_factory(poll_interval=60, worker_name="idle")
    release = threading.Event()

    @failing.performer("flaky", backoff=lambda job: 2)
    def fail_once(job):
        release.wait(10)
        raise RuntimeError("the first attempt fails")

    @idle.performer("flaky")
    def succeed(job):
        return None

    job = failing.create_job("q", "flaky")
    failing.start()
    wait_for_job(failing, job.id, "running")
    idle.start()
    time.sleep(0.5)  # the idle worker finds nothing to claim and waits
    release.set()
    wait_for_job(failing, job.id, "retryable")
    failing.stop()
    done = wait_for_job(idle, job.id, "completed", timeout=15)
    assert (done.attempted_by, done.attempts) == ("idle", 2)


@pytest.mark.only_on("postgres")
def test_drain_on_an_unreachable_database_raises_instead_of_waiting_for_good(backend):
    # Port 1 refuses connections: a drain retries for connect_timeout, then gives up.
    app = ferroq.App("postgresql://postgres@127.0.0.1:1/ferroq", connect_timeout=1)

    @app.performer("noop")
    def noop(job):
        return None

    started = time.monotonic()
    try:
        with pytest.raises(ferroq.DatabaseError):
            app.drain()
    finally:
        app.close()
    assert time.monotonic() - started < 10
    assert not app.running


@pytest.mark.parametrize("action", ["record", "record_async"])
def test_a_second_signal_releases_running_jobs_and_exits_quietly(app_factory, database_url, ledger, processes, action):
    producer = app_factory()
    worker = processes.worker(TARGET, database_url, TEST_STOP_TIMEOUT=60)
    job = producer.create_job("q", action, {"sleep": 60}, max_attempts=1)
    wait_until(lambda: ledger.starts(job.id), timeout=20, message=processes.describe)

    os.kill(worker.pid, signal.SIGTERM)  # graceful: would wait up to 60 s for the job
    time.sleep(0.5)
    signalled = time.monotonic()
    os.kill(worker.pid, signal.SIGINT)  # the second signal cuts it short
    rc = worker.wait(timeout=20)
    assert time.monotonic() - signalled < 10, "the second signal did not cut the stop short"
    output = processes.output(worker)
    assert rc == 0 and "Traceback" not in output, output
    released = producer.get_job(job.id)
    assert (released.state, released.attempts) == ("available", 0), "the job was not released, or its attempt used up"
