"""Concurrent queues (listed in ``queues=``): up to N jobs at once, priority order, and a
failing job does not block the queue."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import Recorder, wait_for_job, wait_for_jobs


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_concurrent_queue_runs_up_to_its_limit(app_factory, kind):
    app = app_factory(concurrency=10, queues={"emails": 3}, poll_interval=60)
    rec = Recorder()

    if kind == "sync":

        @app.performer("send")
        def send(job):
            with rec.run(job):
                time.sleep(0.3)
    else:

        @app.performer("send")
        async def send(job):
            with rec.run(job):
                await asyncio.sleep(0.3)

    jobs = app.create_jobs(
        [{"queue": "emails", "action": "send"} for _ in range(9)]
        + [{"queue": "other", "action": "send"} for _ in range(3)]
    )
    app.start()
    wait_for_jobs(app, [j.id for j in jobs], "completed", timeout=20)
    assert rec.max_by_queue["emails"] <= 3, "the concurrent queue exceeded its limit"
    assert rec.max_by_queue["emails"] == 3, "9 ready jobs never ran 3 at once"
    assert rec.max_by_queue["other"] == 1, "an unlisted queue must stay blocking"


def test_concurrent_queue_runs_in_priority_order(app_factory):
    app = app_factory(concurrency=10, queues={"emails": 1}, poll_interval=60)
    rec = Recorder()

    @app.performer("send")
    def send(job):
        with rec.run(job):
            pass

    priorities = [5, 0, 3, 1, 0, 9, 3]
    jobs = [app.create_job("emails", "send", {"i": i}, priority=p) for i, p in enumerate(priorities)]
    app.start()
    wait_for_jobs(app, [j.id for j in jobs], "completed")
    expected = [j.id for _, _, j in sorted((p, i, j) for i, (p, j) in enumerate(zip(priorities, jobs, strict=True)))]
    assert rec.order() == expected


def test_failing_job_does_not_block_a_concurrent_queue(app_factory):
    app = app_factory(concurrency=10, queues={"emails": 1}, poll_interval=60)
    rec = Recorder()

    @app.performer("flaky", backoff=lambda job: 1.5)
    def flaky(job):
        with rec.run(job):
            if job.attempts == 1:
                raise RuntimeError("smtp down")
        return "sent"

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    j1 = app.create_job("emails", "flaky")
    j2 = app.create_job("emails", "ok")
    j3 = app.create_job("emails", "ok")
    app.start()

    wait_for_jobs(app, [j2.id, j3.id], "completed", timeout=5)
    done = wait_for_job(app, j1.id, "completed", timeout=10)
    assert done.attempts == 2 and done.result == "sent"
    second_attempt = rec.starts(j1.id)[1]["t"]
    assert rec.starts(j2.id)[0]["t"] < second_attempt
    assert rec.starts(j3.id)[0]["t"] < second_attempt


def test_failed_job_in_concurrent_queue_ends_failed_and_others_continue(app_factory):
    app = app_factory(concurrency=4, queues={"emails": 2}, poll_interval=60)

    @app.performer("boom", backoff=lambda job: 0.1)
    def boom(job):
        raise ValueError("bounce")

    @app.performer("ok")
    def ok(job):
        return job.params["i"]

    bad = app.create_job("emails", "boom", max_attempts=2)
    good = [app.create_job("emails", "ok", {"i": i}) for i in range(4)]
    app.start()
    assert [wait_for_job(app, j.id, "completed").result for j in good] == [0, 1, 2, 3]
    failed = wait_for_job(app, bad.id, "failed", timeout=10)
    assert failed.attempts == 2 and "bounce" in failed.error
