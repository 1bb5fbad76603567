"""Bulk changes: retry, cancel and delete every job a filter of ``list_jobs`` matches, in one
statement (how the dead letter is redriven or purged), and the ``older_than`` filter."""

from __future__ import annotations

import asyncio
import threading

import pytest
from helpers import wait_for_job, wait_until

import ferroq


def _failing_app(app_factory):
    """An App whose ``flaky`` performer fails while ``failing`` is set (one attempt per job,
    so a failure ends the job ``failed``), and ``ok`` always completes."""
    app = app_factory(poll_interval=60)
    failing = {"on": True}

    @app.performer("flaky", max_attempts=1)
    def flaky(job):
        if failing["on"]:
            raise RuntimeError("upstream is down")

    @app.performer("ok")
    def ok(job):
        pass

    return app, failing


def _states(app, **filters):
    return sorted(job.state for job in app.list_jobs(limit=1000, **filters))


def test_retry_jobs_redrives_the_matching_dead_letter_only(app_factory):
    app, failing = _failing_app(app_factory)
    in_a = [app.create_job("a", "flaky", {"n": i}) for i in range(5)]
    in_b = [app.create_job("b", "flaky", {"n": i}) for i in range(2)]
    assert app.drain() == 7
    assert _states(app) == ["failed"] * 7

    failing["on"] = False
    assert app.retry_jobs(queue="a", state="failed") == 5
    assert app.drain() == 5
    assert [app.get_job(j.id).state for j in in_a] == ["completed"] * 5
    assert [app.get_job(j.id).state for j in in_b] == ["failed"] * 2
    # A retried job gets one more attempt although its one attempt was used up.
    assert [app.get_job(j.id).attempts for j in in_a] == [2] * 5

    # The search matches the error text, as in list_jobs.
    assert app.retry_jobs(search="UPSTREAM is") == 2
    assert app.drain() == 2
    assert _states(app) == ["completed"] * 7


def test_retry_jobs_counts_what_it_changed_and_leaves_running_and_completed_jobs(app_factory):
    app, failing = _failing_app(app_factory)
    failed = app.create_job("q1", "flaky")
    done = app.create_job("q2", "ok")
    later = app.create_job("q3", "ok", delay=3600)
    assert app.drain() == 2
    failing["on"] = False
    # By default a retry applies to scheduled, retryable, failed and discarded jobs.
    assert app.retry_jobs() == 2
    assert app.get_job(later.id).state == "available"
    assert app.get_job(failed.id).state == "available"
    assert app.get_job(done.id).state == "completed"
    assert app.drain() == 2
    assert app.retry_jobs() == 0


def test_delete_jobs_purges_finished_jobs_older_than_asked(app_factory, db):
    app, _ = _failing_app(app_factory)
    old_failures = [app.create_job(f"old{i}", "flaky") for i in range(3)]
    new_failure = app.create_job("new", "flaky")
    completed = app.create_job("c", "ok")
    waiting = app.create_job("w", "ok", delay=3600)
    assert app.drain() == 5
    # Two days ago, as the database clock counts.
    db.execute(
        f"UPDATE ferroq_jobs SET done_at = {db.seconds_from_now_sql(-2 * 86400)} WHERE id IN (%s, %s, %s)",
        [job.id for job in old_failures],
    )
    assert [j.id for j in app.list_jobs(state="failed", older_than=86400)] == [j.id for j in old_failures]

    assert app.delete_jobs(state="failed", older_than=86400) == 3
    assert all(app.get_job(job.id) is None for job in old_failures)
    assert app.get_job(new_failure.id).state == "failed"
    # Without a state: every finished job that matches, never one that waits or runs.
    assert app.delete_jobs() == 2
    assert app.get_job(completed.id) is None and app.get_job(new_failure.id) is None
    assert app.get_job(waiting.id).state == "scheduled"
    assert app.delete_jobs() == 0


def test_cancel_jobs_discards_waiting_jobs_and_blocking_queues_move_on(app_factory):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("stuck", backoff=lambda job: 3600)
    def stuck(job):
        raise RuntimeError("never works")

    @app.performer("ok")
    def ok(job):
        ran.append(job.params["n"])

    # A blocking queue whose head retries in an hour holds the three jobs behind it.
    head = app.create_job("customer-1", "stuck")
    behind = [app.create_job("customer-1", "ok", {"n": n}) for n in range(3)]
    elsewhere = app.create_job("customer-2", "ok", {"n": 99}, delay=3600)
    assert app.drain() == 1
    assert app.get_job(head.id).state == "retryable"
    assert app.drain() == 0 and ran == []

    assert app.cancel_jobs(action="stuck") == 1
    cancelled = app.get_job(head.id)
    assert cancelled.state == "discarded" and "cancelled" in cancelled.error
    assert app.drain() == 3
    assert ran == [0, 1, 2]
    assert [app.get_job(j.id).state for j in behind] == ["completed"] * 3
    assert app.get_job(elsewhere.id).state == "scheduled"

    assert app.cancel_jobs(state="scheduled") == 1
    assert app.get_job(elsewhere.id).state == "discarded"
    assert app.cancel_jobs() == 0


@pytest.mark.parametrize(
    ("change", "state"),
    [("retry_jobs", "running"), ("retry_jobs", "completed"), ("cancel_jobs", "failed"), ("delete_jobs", "available")],
)
def test_bulk_changes_refuse_states_they_cannot_apply_to_before_changing_anything(app_factory, change, state):
    app, _ = _failing_app(app_factory)
    jobs = [app.create_job("q", "ok"), app.create_job("r", "flaky")]
    before = [(j.id, j.state) for j in app.list_jobs()]
    with pytest.raises(ferroq.InvalidOptionError, match=f"cannot {change.split('_')[0]} {state} jobs"):
        getattr(app, change)(state=["scheduled", state] if change != "delete_jobs" else state)
    assert [(j.id, j.state) for j in app.list_jobs()] == before
    assert len(jobs) == 2


def test_bulk_changes_check_their_filters(app_factory):
    app, _ = _failing_app(app_factory)
    app.create_job("q", "ok")
    with pytest.raises(ferroq.InvalidOptionError, match="older_than"):
        app.delete_jobs(older_than=-1)
    with pytest.raises(ferroq.InvalidOptionError, match="unknown job state"):
        app.retry_jobs(state="lost")
    with pytest.raises(ferroq.InvalidOptionError, match="older_than"):
        app.list_jobs(older_than="a week")
    assert app.paginate_jobs(older_than=3600).total == 0
    assert app.paginate_jobs(older_than=0).total == 1


def test_cancel_jobs_also_cancels_running_jobs_through_their_workers(app_factory):
    worker = app_factory(poll_interval=60, wakeup_interval=0.05, concurrency=4, queues={"work": 4})
    started = []

    @worker.performer("hang")
    async def hang(job):
        started.append(job.id)
        await asyncio.sleep(60)

    running = [worker.create_job("work", "hang", {"n": n}) for n in range(2)]
    waiting = worker.create_job("later", "hang", delay=3600)
    worker.start()
    wait_until(lambda: len(started) == 2, timeout=10)

    operator = app_factory()
    assert operator.cancel_jobs(action="hang") == 3
    assert operator.get_job(waiting.id).state == "discarded"
    for job in running:
        done = wait_for_job(operator, job.id, "discarded", timeout=10)
        assert done.error == "cancelled while running"
    assert operator.cancel_jobs(action="hang") == 0


def test_a_job_retried_ahead_of_its_queues_running_job_waits_for_it_and_stalls_no_other_queue(app_factory):
    app = app_factory(poll_interval=60, concurrency=4)
    release = threading.Event()
    order = []
    failing = {"on": True}

    @app.performer("flaky", max_attempts=1)
    def flaky(job):
        order.append(("flaky", job.id))
        if failing["on"]:
            raise RuntimeError("down")

    @app.performer("hold")
    def hold(job):
        order.append(("hold", job.id))
        release.wait(30)

    @app.performer("ok")
    def ok(job):
        order.append(("ok", job.id))

    older = app.create_job("b", "flaky")
    assert app.drain() == 1 and app.get_job(older.id).state == "failed"
    failing["on"] = False
    running = app.create_job("b", "hold")
    try:
        app.start()
        wait_for_job(app, running.id, "running")
        # Put back ahead of the running job in FIFO order: it must wait, and claims go on.
        assert app.retry_jobs(queue="b", state="failed") == 1
        elsewhere = app.create_job("other", "ok")
        wait_for_job(app, elsewhere.id, "completed", timeout=10)
        assert app.get_job(older.id).state == "available"
    finally:
        release.set()
    wait_for_job(app, older.id, "completed", timeout=10)
    assert order.index(("hold", running.id)) < order.index(("flaky", older.id), 1)


def test_retry_jobs_forgets_a_cancel_request(app_factory):
    worker = app_factory(poll_interval=60, wakeup_interval=0.05)
    runs = []

    @worker.performer("hang")
    async def hang(job):
        runs.append(job.id)
        if len(runs) == 1:
            await asyncio.sleep(60)

    job = worker.create_job("q", "hang")
    worker.start()
    wait_until(lambda: runs == [job.id], timeout=10)
    operator = app_factory()
    assert operator.cancel_jobs(queue="q") == 1
    wait_for_job(operator, job.id, "discarded", timeout=10)

    assert operator.retry_jobs(queue="q", state="discarded") == 1
    assert operator.get_job(job.id).cancel_requested_at is None
    done = wait_for_job(operator, job.id, "completed", timeout=10)
    assert runs == [job.id, job.id] and done.error is None
