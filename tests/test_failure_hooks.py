"""on_failure runs exactly once for every job that ends failed: a failing last attempt, a last
attempt whose lease expired (worker killed or stalled), and a last attempt whose completion in
the performer's own transaction did not commit; never for a stale attempt, nor for a job its
own committed transaction completed."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from helpers import expire_lease, stays_true, transaction_connection, wait_for_job, wait_until

UNCOMMITTED = "job.complete(connection) was called but its transaction did not commit"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_last_attempt_runs_its_hook_once(app_factory, kind):
    app = app_factory(poll_interval=60)
    hooked: list[tuple[int, str]] = []

    def alert(job, error):
        hooked.append((job.attempts, error))

    if kind == "sync":

        @app.performer("flaky", on_failure=alert, backoff=lambda job: 0)
        def flaky(job):
            raise RuntimeError(f"attempt {job.attempts} failed")

    else:

        @app.performer("flaky", on_failure=alert, backoff=lambda job: 0)
        async def flaky(job):
            raise RuntimeError(f"attempt {job.attempts} failed")

    job = app.create_job("q", "flaky", max_attempts=2)
    app.start()
    failed = wait_for_job(app, job.id, "failed", timeout=10)
    assert failed.attempts == 2 and "attempt 2 failed" in failed.error
    assert stays_true(lambda: len(hooked) == 1, 0.5)
    assert hooked == [(2, failed.error)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_last_attempt_whose_lease_expires_fails_after_its_hook_ran_once(app_factory, db, kind):
    """The last attempt stalls and its lease lapses: the job comes back, the worker runs only
    its hook (not the performer), and fails it. The stalled attempt failing later is stale:
    its failure is fenced out and does not run the hook again."""
    app = app_factory(lease_ttl=1, concurrency=2, poll_interval=60)
    release = threading.Event()
    runs: list[int] = []
    hooked: list[tuple[int, str]] = []

    def alert(job, error):
        hooked.append((job.attempts, error))

    if kind == "sync":

        @app.performer("stalls", on_failure=alert)
        def stalls(job):
            runs.append(job.attempts)
            while not release.wait(0.05):
                pass
            raise RuntimeError("the stalled attempt gave up")

    else:

        @app.performer("stalls", on_failure=alert)
        async def stalls(job):
            runs.append(job.attempts)
            while not release.is_set():
                await asyncio.sleep(0.05)
            raise RuntimeError("the stalled attempt gave up")

    job = app.create_job("q", "stalls", max_attempts=1)
    app.start()
    try:
        wait_until(lambda: runs == [1], timeout=10, message="the attempt to start")

        # The worker keeps renewing the lease of its stalled attempt: make it lapse until the
        # rescuer has handed the job back and the hook has run.
        def expired_and_hooked():
            expire_lease(db, job.id, attempts=1)
            return bool(hooked)

        wait_until(expired_and_hooked, timeout=20, interval=0.05, message="the failure hook to run")
        failed = wait_for_job(app, job.id, "failed", timeout=10)
    finally:
        release.set()
    assert failed.attempts == 1, "the claim that ran the hook gave its attempt back"
    assert "lease expired" in failed.error and "on_failure hook" in failed.error
    assert failed.done_at is not None
    assert hooked == [(1, failed.error)]
    assert runs == [1], "the performer never ran again"
    # The stalled attempt has returned (raised) by now or soon: no second hook, no change.
    assert stays_true(lambda: len(hooked) == 1 and app.get_job(job.id).error == failed.error, 1.0)
    assert app.get_job(job.id).state == "failed"


def test_a_killed_workers_last_attempt_fails_with_its_hook_run_once(app_factory, database_url, ledger, processes):
    """A worker is killed during a job's last attempt: another worker with the performer runs
    its hook (in that process: counted in the ledger) and the job ends failed."""
    producer = app_factory()
    job = producer.create_job("q", "hangs_with_hook", max_attempts=1)
    a = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=1)
    wait_until(lambda: ledger.starts(job.id), timeout=20, message=processes.describe)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    b = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=1)

    failed = wait_for_job(producer, job.id, "failed", timeout=30)
    assert failed.attempts == 1
    assert "lease expired" in failed.error and "on_failure hook" in failed.error
    hooks = ledger.rows("hook", job.id)
    assert [(h["pid"], h["attempt"]) for h in hooks] == [(b.pid, 1)], processes.describe()
    assert [s["pid"] for s in ledger.starts(job.id)] == [a.pid], "the performer ran only once"
    assert stays_true(lambda: len(ledger.rows("hook", job.id)) == 1, 1.0)
    assert b.poll() is None, "the surviving worker exited"


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_the_last_attempt_completed_in_the_callers_transaction(app_factory, database_url, kind, outcome):
    """On the last attempt, with an on_failure hook: a committed completion stands even if the
    performer raises afterwards (no hook); a rolled-back one fails the job, hook run once."""
    app = app_factory(poll_interval=60)
    commit = outcome == "commit"
    hooked: list[str] = []

    def alert(job, error):
        hooked.append(error)

    def complete_in_transaction(job) -> None:
        with transaction_connection(database_url) as conn:
            assert job.complete(conn) is True
            if not commit:
                conn.rollback()

    async def acomplete_in_transaction(job) -> None:
        with transaction_connection(database_url) as conn:
            assert await job.acomplete(conn) is True
            if not commit:
                conn.rollback()

    if kind == "sync":

        @app.performer("pay", on_failure=alert)
        def pay(job):
            complete_in_transaction(job)
            if commit:
                raise RuntimeError("after a committed completion")

    else:

        @app.performer("pay", on_failure=alert)
        async def pay(job):
            await acomplete_in_transaction(job)
            if commit:
                raise RuntimeError("after a committed completion")

    job = app.create_job("q", "pay", max_attempts=1)
    assert app.drain() == 1
    done = app.get_job(job.id)
    assert done.attempts == 1
    if commit:
        assert (done.state, done.error) == ("completed", None)
        assert hooked == []
    else:
        assert done.state == "failed" and done.error.startswith(UNCOMMITTED)
        assert hooked == [done.error]


def test_a_job_claimed_with_no_attempt_left_and_no_hook_just_fails(app_factory, db):
    app = app_factory(lease_ttl=1, concurrency=2, poll_interval=60)
    release = threading.Event()
    runs: list[int] = []

    @app.performer("stalls")
    def stalls(job):
        runs.append(job.attempts)
        while not release.wait(0.05):
            pass
        return "late"

    job = app.create_job("q", "stalls", max_attempts=1)
    app.start()
    try:
        wait_until(lambda: runs == [1], timeout=10, message="the attempt to start")

        def expired_and_failed():
            expire_lease(db, job.id, attempts=1)
            got = app.get_job(job.id)
            return got.state == "failed"

        wait_until(expired_and_failed, timeout=20, interval=0.05, message="the job to fail")
    finally:
        release.set()
    assert stays_true(lambda: app.get_job(job.id).state == "failed", 1.0), "the stale return is fenced"
    failed = app.get_job(job.id)
    assert (failed.attempts, failed.result) == (1, None)
    assert runs == [1]
