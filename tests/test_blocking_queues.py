"""Blocking queues (every queue not listed in ``queues=``): one job at a time, FIFO, a failing
job blocks its queue, retries with backoff, timeouts, scheduling, scopes."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers import Recorder, job_row, seconds, stays_true, wait_for_job, wait_for_jobs, wait_until


def _ok_performer(app, rec: Recorder, name: str = "ok", sleep: float = 0.0):
    @app.performer(name)
    def ok(job):
        with rec.run(job):
            if sleep:
                time.sleep(sleep)
        return "ok"

    return ok


# --- order and exclusivity -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["start", "drain"])
def test_fifo_by_scheduled_at_then_sequence(app_factory, mode):
    app = app_factory(concurrency=10, poll_interval=60)
    rec = Recorder()
    _ok_performer(app, rec, sleep=0.02)

    now = datetime.now(timezone.utc)
    tie = now - timedelta(seconds=10)
    j1 = app.create_job("q", "ok", {"n": 1})
    j2 = app.create_job("q", "ok", {"n": 2}, scheduled_at=now - timedelta(seconds=60))
    j3 = app.create_job("q", "ok", {"n": 3})
    j4 = app.create_job("q", "ok", {"n": 4}, scheduled_at=now - timedelta(seconds=30))
    j5 = app.create_job("q", "ok", {"n": 5}, scheduled_at=tie)
    j6 = app.create_job("q", "ok", {"n": 6}, scheduled_at=tie)
    j7 = app.create_job("q", "ok", {"n": 7})
    expected = [j2.id, j4.id, j5.id, j6.id, j1.id, j3.id, j7.id]

    if mode == "drain":
        assert app.drain() == 7
    else:
        app.start()
    wait_for_jobs(app, expected, "completed")
    assert rec.order() == expected
    assert rec.max_by_queue["q"] == 1


def test_one_job_at_a_time_per_queue_even_with_concurrency_10(app_factory):
    app = app_factory(concurrency=10, poll_interval=60)
    rec = Recorder()
    _ok_performer(app, rec, sleep=0.05)
    jobs = app.create_jobs([{"queue": q, "action": "ok"} for _ in range(8) for q in ("q", "r")])
    app.start()
    wait_for_jobs(app, [j.id for j in jobs], "completed", timeout=20)
    assert rec.max_by_queue["q"] == 1 and rec.max_by_queue["r"] == 1
    assert [i for i in rec.order() if app.get_job(i).queue == "q"] == [j.id for j in jobs if j.queue == "q"]


def test_two_apps_of_one_scope_never_overlap_in_a_queue(app_factory):
    rec = Recorder()
    apps = [app_factory(concurrency=5, poll_interval=60) for _ in range(2)]
    for app in apps:
        _ok_performer(app, rec, sleep=0.02)
    jobs = apps[0].create_jobs([{"queue": f"q{i % 2}", "action": "ok"} for i in range(20)])
    for app in apps:
        app.start()
    wait_for_jobs(apps[0], [j.id for j in jobs], "completed", timeout=20)
    assert rec.max_by_queue["q0"] == 1 and rec.max_by_queue["q1"] == 1
    assert sorted(rec.order()) == sorted(j.id for j in jobs), "a job ran twice or never"


@pytest.mark.parametrize("kind", ["sync", "async", "mixed"])
def test_concurrency_is_never_exceeded(app_factory, kind):
    app = app_factory(concurrency=3, poll_interval=60)
    rec = Recorder()

    @app.performer("sync_job")
    def sync_job(job):
        with rec.run(job):
            time.sleep(0.3)

    @app.performer("async_job")
    async def async_job(job):
        with rec.run(job):
            await asyncio.sleep(0.3)

    def action(i):
        if kind == "mixed":
            return "sync_job" if i % 2 else "async_job"
        return f"{kind}_job"

    jobs = app.create_jobs([{"queue": f"q{i}", "action": action(i)} for i in range(12)])
    app.start()
    wait_for_jobs(app, [j.id for j in jobs], "completed", timeout=30)
    assert rec.max_running <= 3, f"{rec.max_running} performers ran at once with concurrency=3"
    assert rec.max_running == 3, "12 ready jobs in 12 queues never used all 3 slots"


# --- failures, retries, backoff ----------------------------------------------------------


def test_failing_job_blocks_only_its_queue(app_factory):
    app = app_factory(concurrency=10, poll_interval=60)
    rec = Recorder()

    @app.performer("flaky", backoff=lambda job: 1.0)
    def flaky(job):
        with rec.run(job):
            if job.attempts < 3:
                raise RuntimeError(f"flaky attempt {job.attempts}")
        return "finally"

    _ok_performer(app, rec)
    a1 = app.create_job("a", "flaky")
    a2 = app.create_job("a", "ok")
    b1 = app.create_job("b", "ok")
    app.start()

    retrying = wait_for_job(app, a1.id, "retryable")
    assert "flaky attempt 1" in retrying.error
    assert app.get_job(a2.id).state == "available", "the queue's next job did not wait"
    wait_for_job(app, b1.id, "completed", timeout=2)  # other queue not blocked

    wait_for_jobs(app, [a1.id, a2.id], "completed", timeout=15)
    done = app.get_job(a1.id)
    assert done.attempts == 3 and done.result == "finally"
    assert rec.count(a1.id) == 3 and rec.count(a2.id) == 1
    assert rec.starts(a2.id)[0]["t"] > rec.finishes(a1.id)[-1]["t"]
    assert rec.starts(b1.id)[0]["t"] < rec.starts(a1.id)[2]["t"]


def _wait_row(db, job_id, state, attempts, timeout=10.0):
    def check():
        row = job_row(db, job_id)
        return row if row["state"] == state and row["attempts"] == attempts else None

    return wait_until(
        check, timeout=timeout, message=lambda: f"row {job_id} state={state} attempts={attempts}: {job_row(db, job_id)}"
    )


def test_default_backoff(app_factory, db):
    app = app_factory(poll_interval=60)

    @app.performer("boom")
    def boom(job):
        raise ValueError(f"boom {job.attempts}")

    job = app.create_job("q", "boom", max_attempts=5)
    app.start()

    r1 = _wait_row(db, job.id, "retryable", 1)
    assert "boom 1" in r1["error"]
    assert 1.8 <= seconds(r1["attempted_at"], r1["next_attempt_at"]) <= 2.6
    seen = app.get_job(job.id)
    assert seen.state == "retryable" and seen.next_attempt_at == r1["next_attempt_at"]

    r2 = _wait_row(db, job.id, "retryable", 2, timeout=10)
    assert "boom 2" in r2["error"]
    assert 2.8 <= seconds(r2["attempted_at"], r2["next_attempt_at"]) <= 3.6
    # The retry ran when due: not early, and not a poll interval late.
    assert r2["attempted_at"] >= r1["next_attempt_at"] - timedelta(milliseconds=10)
    assert seconds(r1["next_attempt_at"], r2["attempted_at"]) < 1.5


def test_default_backoff_is_capped_by_max_backoff(app_factory, db):
    app = app_factory(poll_interval=60)

    @app.performer("boom")
    def boom(job):
        raise ValueError("boom")

    job = app.create_job("q", "boom", max_attempts=5, max_backoff=1.0)
    app.start()
    r1 = _wait_row(db, job.id, "retryable", 1)
    assert 0.8 <= seconds(r1["attempted_at"], r1["next_attempt_at"]) <= 1.5
    r2 = _wait_row(db, job.id, "retryable", 2)
    assert 0.8 <= seconds(r2["attempted_at"], r2["next_attempt_at"]) <= 1.5


def test_custom_backoff(app_factory, db):
    app = app_factory(poll_interval=60)
    calls = []

    def backoff(job):
        calls.append(job.attempts)
        return 1.2

    @app.performer("flaky", backoff=backoff)
    def flaky(job):
        if job.attempts < 3:
            raise RuntimeError("not yet")
        return "ok"

    job = app.create_job("q", "flaky")
    app.start()
    r1 = _wait_row(db, job.id, "retryable", 1)
    assert 1.0 <= seconds(r1["attempted_at"], r1["next_attempt_at"]) <= 1.7
    done = wait_for_job(app, job.id, "completed", timeout=10)
    assert done.attempts == 3
    assert calls == [1, 2]


def test_max_attempts_fails_the_job_calls_on_failure_once_and_queue_moves_on(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()
    alerts = []

    def on_failure(job, error):
        alerts.append((job.id, error))

    @app.performer("boom", backoff=lambda job: 0.1, on_failure=on_failure)
    def boom(job):
        with rec.run(job):
            raise ValueError("kaput")

    _ok_performer(app, rec)
    j1 = app.create_job("q", "boom", max_attempts=3)
    j2 = app.create_job("q", "ok")
    app.start()

    wait_for_job(app, j2.id, "completed", timeout=15)
    failed = app.get_job(j1.id)
    assert failed.state == "failed"
    assert failed.attempts == 3
    assert "kaput" in failed.error
    assert rec.count(j1.id) == 3
    assert rec.starts(j2.id)[0]["t"] > rec.finishes(j1.id)[-1]["t"]

    wait_until(lambda: alerts, timeout=5)
    assert stays_true(lambda: len(alerts) == 1, 0.5), alerts
    assert alerts[0][0] == j1.id and "kaput" in alerts[0][1]


def test_on_failure_exception_is_recorded_and_worker_keeps_running(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()

    def on_failure(job, error):
        raise RuntimeError("pager is down")

    @app.performer("boom", on_failure=on_failure)
    def boom(job):
        raise ValueError("kaput")

    _ok_performer(app, rec)
    j1 = app.create_job("q", "boom", max_attempts=1)
    j2 = app.create_job("q", "ok")
    app.start()

    wait_for_job(app, j2.id, "completed")
    wait_until(
        lambda: "on_failure" in (app.get_job(j1.id).error or ""),
        timeout=5,
        message=lambda: f"on_failure in error: {app.get_job(j1.id).error!r}",
    )
    assert app.get_job(j1.id).state == "failed"
    later = app.create_job("other", "ok")
    wait_for_job(app, later.id, "completed")


def test_retry_job_of_a_failed_job(app_factory):
    app = app_factory(poll_interval=60)
    broken = {"yes": True}

    @app.performer("flaky")
    def flaky(job):
        if broken["yes"]:
            raise RuntimeError("still broken")
        return "fixed"

    job = app.create_job("q", "flaky", max_attempts=1)
    app.start()
    assert wait_for_job(app, job.id, "failed").attempts == 1

    broken["yes"] = False
    retried = app.retry_job(job.id)
    assert retried.id == job.id and retried.state == "available"
    done = wait_for_job(app, job.id, "completed", timeout=5)
    assert done.result == "fixed"


# --- isolation between queues and scopes --------------------------------------------------


def test_slow_queue_does_not_delay_other_queues(app_factory):
    app = app_factory(concurrency=4, poll_interval=60)
    rec = Recorder()
    gate = threading.Event()

    @app.performer("slow")
    def slow(job):
        with rec.run(job):
            gate.wait(20)

    _ok_performer(app, rec)
    slow_job = app.create_job("slow_q", "slow")
    fast = [app.create_job(f"fast_{i % 3}", "ok") for i in range(6)]
    app.start()
    try:
        wait_until(lambda: rec.count(slow_job.id) == 1)
        wait_for_jobs(app, [j.id for j in fast], "completed", timeout=5)
        assert app.get_job(slow_job.id).state == "running"
    finally:
        gate.set()
    wait_for_job(app, slow_job.id, "completed")


def test_scopes_never_see_each_others_jobs(app_factory):
    alpha = app_factory(scope="alpha", poll_interval=60)
    beta = app_factory(scope="beta", poll_interval=60)
    gate = threading.Event()
    seen = {"alpha": [], "beta": []}

    for app, name in ((alpha, "alpha"), (beta, "beta")):

        def make(name):
            def work(job):
                seen[name].append((job.id, job.scope))
                if job.params.get("hold"):
                    gate.wait(20)

            return work

        app.performer("work")(make(name))

    held = alpha.create_job("shared", "work", {"hold": True})
    a_jobs = [held, alpha.create_job("shared", "work", {})]
    b_jobs = [beta.create_job("shared", "work", {}) for _ in range(3)]
    alpha.start()
    beta.start()
    try:
        # alpha's held job blocks alpha's "shared" queue only.
        wait_for_jobs(beta, [j.id for j in b_jobs], "completed", timeout=5)
        assert alpha.get_job(held.id).state == "running"
    finally:
        gate.set()
    wait_for_jobs(alpha, [j.id for j in a_jobs], "completed")

    assert sorted(seen["alpha"]) == sorted((j.id, "alpha") for j in a_jobs)
    assert sorted(seen["beta"]) == sorted((j.id, "beta") for j in b_jobs)
    assert sorted(j.id for j in alpha.list_jobs()) == sorted(j.id for j in a_jobs)
    assert sorted(j.id for j in beta.list_jobs(queue="shared")) == sorted(j.id for j in b_jobs)
    assert alpha.get_job(b_jobs[0].id) is None
    assert beta.get_job(held.id) is None


# --- scheduling and wake-ups ---------------------------------------------------------------


@pytest.mark.parametrize("producer", ["same_app", "other_app", "before_start"])
def test_scheduled_job_runs_on_time(app_factory, producer):
    app = app_factory(poll_interval=60)
    creator = app_factory() if producer == "other_app" else app
    started_wall = []

    @app.performer("a")
    def a(job):
        started_wall.append(time.time())

    if producer != "before_start":
        app.start()
        time.sleep(0.3)  # let the worker go idle (not an assertion)
    job = creator.create_job("q", "a", delay=2)
    assert job.state == "scheduled"
    if producer == "before_start":
        app.start()

    done = wait_for_job(app, job.id, "completed", timeout=8)
    assert done.attempted_at >= done.scheduled_at, "the job started before its time"
    assert started_wall[0] >= done.scheduled_at.timestamp() - 0.05
    lateness = seconds(done.scheduled_at, done.attempted_at)
    assert lateness < 1.5, f"started {lateness:.2f}s after scheduled_at (poll_interval=60)"


@pytest.mark.parametrize("producer", ["same_app", "other_app"])
def test_new_job_is_picked_up_without_waiting_for_the_poll(app_factory, producer):
    app = app_factory(poll_interval=60)
    creator = app_factory() if producer == "other_app" else app

    @app.performer("a")
    def a(job):
        return None

    app.start()
    for i in range(3):
        time.sleep(0.3)  # the worker is idle when the job arrives (not an assertion)
        job = creator.create_job(f"q{i}", "a")
        done = wait_for_job(app, job.id, "completed", timeout=5)
        latency = seconds(done.inserted_at, done.attempted_at)
        assert latency < 1.0, f"job {i} started {latency:.2f}s after insert"


# --- timeouts -------------------------------------------------------------------------------


def test_timeout_cancels_an_async_performer(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()
    cancelled = threading.Event()

    @app.performer("sleepy")
    async def sleepy(job):
        with rec.run(job):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    _ok_performer(app, rec)
    j1 = app.create_job("q", "sleepy", timeout=0.5, max_attempts=1)
    j2 = app.create_job("q", "ok")
    app.start()

    failed = wait_for_job(app, j1.id, "failed", timeout=10)
    assert "timeout" in failed.error.lower()
    assert cancelled.is_set()
    wait_for_job(app, j2.id, "completed")
    assert rec.starts(j2.id)[0]["t"] >= rec.finishes(j1.id)[0]["t"]


def test_timeout_interrupts_a_sync_busy_loop(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()

    @app.performer("busy")
    def busy(job):
        rec.start(job)
        outcome = "interrupted"
        try:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                pass
            outcome = "ran to the end"
        finally:
            rec.finish(job, outcome=outcome)

    _ok_performer(app, rec)
    j1 = app.create_job("q", "busy", timeout=0.5, max_attempts=1)
    j2 = app.create_job("q", "ok")
    app.start()

    failed = wait_for_job(app, j1.id, "failed", timeout=15)
    assert "timeout" in failed.error.lower()
    wait_for_job(app, j2.id, "completed", timeout=15)
    [start], [finish] = rec.starts(j1.id), rec.finishes(j1.id)
    assert finish["outcome"] == "interrupted"
    assert finish["t"] - start["t"] < 5
    assert rec.starts(j2.id)[0]["t"] >= finish["t"], (
        "the queue's next job started while the timed-out performer was still running"
    )


def test_blocking_queue_stays_locked_until_a_timed_out_sync_performer_returns(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()

    @app.performer("stuck")
    def stuck(job):
        with rec.run(job):
            time.sleep(2.0)  # one C call: cannot be interrupted before it returns

    _ok_performer(app, rec)
    j1 = app.create_job("q", "stuck", timeout=0.3, max_attempts=1)
    j2 = app.create_job("q", "ok")
    app.start()

    wait_for_job(app, j2.id, "completed", timeout=15)
    failed = app.get_job(j1.id)
    assert failed.state == "failed" and "timeout" in failed.error.lower()
    assert rec.starts(j2.id)[0]["t"] >= rec.finishes(j1.id)[0]["t"], (
        "the queue's next job started while the timed-out performer was still running"
    )
