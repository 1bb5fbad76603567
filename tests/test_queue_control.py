"""Queue control (issue 12, points 3 and 4): pausing and resuming queues across workers and
restarts, and cancelling a running job on whichever worker runs it.

The operator's App is a separate ``ferroq.App`` from the workers' (its own connections), so a
cancel reaches a worker the way it reaches one in another process: NOTIFY on PostgreSQL, the
file's commit on SQLite. Measured latencies are printed (``pytest -s``) as well as bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from helpers import ferroq_cli, stays_true, wait_for_job, wait_for_jobs, wait_until

import ferroq

#: SQLite's watcher looks for other processes' commits at least this often.
WAKEUP_INTERVAL = 0.05
#: Asked bounds of a cancel's arrival: 1 s on PostgreSQL, wakeup_interval + 1 s on SQLite.
CANCEL_BOUND = {"postgres": 1.0, "sqlite": WAKEUP_INTERVAL + 1.0}


def _worker(app_factory, **kw):
    """A worker App with an interruptible sync performer, an async one, and a quick one."""
    kw.setdefault("wakeup_interval", WAKEUP_INTERVAL)
    kw.setdefault("poll_interval", 60)
    app = app_factory(**kw)
    runs: list[int] = []
    hooks: list[int] = []

    @app.performer("quick")
    def quick(job):
        runs.append(job.id)

    def hook(job, error):
        hooks.append(job.id)

    @app.performer("hang", on_failure=hook)
    def hang(job):
        runs.append(job.id)
        end = time.monotonic() + 60
        while time.monotonic() < end:  # short steps: an interrupt lands between them
            time.sleep(0.01)

    @app.performer("ahang", on_failure=hook)
    async def ahang(job):
        runs.append(job.id)
        await asyncio.sleep(60)

    app.runs = runs  # type: ignore[attr-defined]
    app.hooks = hooks  # type: ignore[attr-defined]
    return app


def test_a_paused_queue_starts_nothing_across_two_workers_and_a_restart(app_factory):
    operator = app_factory()
    operator.pause_queue("q")
    operator.pause_queue("q")  # idempotent
    jobs = [operator.create_job("q", "quick") for _ in range(3)]
    first, second = _worker(app_factory, concurrency=2), _worker(app_factory, concurrency=2)
    first.start()
    second.start()
    assert stays_true(lambda: all(operator.get_job(j.id).state == "available" for j in jobs), 1.0)
    # A restart reads the pause from the database.
    first.stop()
    restarted = _worker(app_factory, concurrency=2)
    restarted.start()
    assert stays_true(lambda: all(operator.get_job(j.id).state == "available" for j in jobs), 0.5)
    assert not (restarted.runs or second.runs)
    [(name, paused_at)] = operator.paused_queues()
    assert name == "q" and paused_at.tzinfo is not None

    resumed_at = time.monotonic()
    operator.resume_queue("q")
    wait_for_jobs(operator, [j.id for j in jobs], "completed", timeout=10)
    print(f"\nresume -> 3 jobs completed: {time.monotonic() - resumed_at:.3f} s")
    assert sorted(restarted.runs + second.runs) == sorted(j.id for j in jobs)
    assert operator.paused_queues() == []


def test_a_pattern_pause_holds_every_matching_queue_and_no_other(app_factory):
    operator = app_factory(queues={"mail.b": 2})
    operator.pause_queue("mail*")
    held = [operator.create_job("mail.a", "quick"), operator.create_job("mail.b", "quick")]
    other = operator.create_job("other", "quick")
    worker = _worker(app_factory, queues={"mail.b": 2})
    worker.start()
    wait_for_job(operator, other.id, "completed")
    assert stays_true(lambda: all(operator.get_job(j.id).state == "available" for j in held), 1.0)
    operator.resume_queue("mail.a")  # not what was paused: the pattern still holds it
    assert stays_true(lambda: operator.get_job(held[0].id).state == "available", 0.5)
    operator.resume_queue("mail*")
    wait_for_jobs(operator, [j.id for j in held], "completed", timeout=5)


def test_the_running_job_of_a_paused_queue_finishes_and_the_next_waits(app_factory):
    operator = app_factory()
    gate = threading.Event()
    worker = _worker(app_factory)

    @worker.performer("gated")
    def gated(job):
        gate.wait(10)
        return "done"

    running = operator.create_job("q", "gated")
    behind = operator.create_job("q", "quick")
    worker.start()
    wait_for_job(operator, running.id, "running")
    operator.pause_queue("q")
    gate.set()
    assert wait_for_job(operator, running.id, "completed").result == "done"
    assert stays_true(lambda: operator.get_job(behind.id).state == "available", 1.0)
    operator.resume_queue("q")
    wait_for_job(operator, behind.id, "completed", timeout=5)


def test_bad_queue_names_raise_before_anything_is_written(app_factory):
    operator = app_factory()
    for bad in ("", "a\0b", "x" * 1000):
        with pytest.raises(ferroq.InvalidNameError):
            operator.pause_queue(bad)
    assert operator.paused_queues() == []


@pytest.mark.parametrize("action", ["hang", "ahang"])
def test_cancel_of_a_running_performer_ends_it_discarded_at_once(app_factory, backend, action):
    operator = app_factory()
    worker = _worker(app_factory)
    job = operator.create_job("q", action, max_attempts=1)
    worker.start()
    wait_until(lambda: job.id in worker.runs, timeout=10)

    asked_at = time.monotonic()
    requested = operator.cancel_job(job.id)
    assert requested.state == "running" and requested.cancel_requested_at is not None
    listed = operator.list_jobs(queue="q")[0]
    assert listed.cancel_requested_at == requested.cancel_requested_at or listed.state == "discarded"
    done = wait_for_job(operator, job.id, "discarded", timeout=10)
    latency = time.monotonic() - asked_at
    print(f"\n{backend} {action}: cancel -> discarded in {latency:.3f} s")
    assert latency < CANCEL_BOUND[backend], f"took {latency:.3f} s"
    assert done.error == "cancelled while running"
    assert done.cancel_requested_at == requested.cancel_requested_at
    assert worker.hooks == [], "a cancel is no failure: on_failure does not run"
    with pytest.raises(ferroq.JobStateError):
        operator.cancel_job(job.id)


def test_a_cancelled_blocking_head_lets_the_next_job_of_its_queue_run(app_factory):
    operator = app_factory()
    worker = _worker(app_factory)
    head = operator.create_job("b", "ahang")
    behind = operator.create_job("b", "quick")
    worker.start()
    wait_until(lambda: head.id in worker.runs, timeout=10)
    assert operator.get_job(behind.id).blocked_by == head.id
    worker.cancel_job(head.id)  # the worker's own App: told in-process, not by the database
    wait_for_job(operator, behind.id, "completed", timeout=5)
    assert operator.get_job(head.id).state == "discarded"


def test_a_killed_workers_cancel_requested_job_ends_cancelled_after_rescue(
    app_factory, database_url, ledger, processes
):
    operator = app_factory()
    job = operator.create_job("q", "first_attempt_hangs")
    killed = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=2)
    wait_until(lambda: ledger.starts(job.id), timeout=20, message=processes.describe)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(10)
    # Through the CLI, as an operator would: no worker runs the job, so the request waits.
    cancel = ferroq_cli("cancel", str(job.id), "--database-url", database_url)
    assert cancel.returncode == 0 and "cancel requested" in cancel.stdout, cancel.stdout + cancel.stderr
    listing = ferroq_cli("jobs", "--database-url", database_url)
    assert "cancel requested at " in listing.stdout, listing.stdout
    assert operator.get_job(job.id).cancel_requested_at is not None
    rescuer = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=2)
    done = wait_for_job(operator, job.id, "discarded", timeout=20)
    assert done.error is not None and done.error.startswith("cancelled while running")
    assert len(ledger.starts(job.id)) == 1, "the cancelled job did not run again"
    assert rescuer.poll() is None
