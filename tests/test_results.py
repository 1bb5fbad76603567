"""What performers return (result, Fail, Snooze, Discard, transactional completion) and the
job inspection API (get/list/paginate/cancel/retry, drain, ferroq.testing)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
from helpers import RawDb, Recorder, execute_in, seconds, transaction_connection, wait_for_job, wait_until

import ferroq
from ferroq.testing import assert_job_created, refute_job_created

RESULTS = {
    "dict": {"ok": 1, "nested": {"list": [1, 2.5, "x", None, True]}},
    "none": None,
    "str": "done ✓",
    "int": 7,
    "list": [1, "a", {"b": False}],
}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_result_is_stored(app_factory, kind):
    app = app_factory()

    if kind == "sync":

        @app.performer("ret")
        def ret(job):
            return RESULTS[job.params["key"]]
    else:

        @app.performer("ret")
        async def ret(job):
            return RESULTS[job.params["key"]]

    jobs = {key: app.create_job(f"q_{key}", "ret", {"key": key}) for key in RESULTS}
    assert app.drain() == len(RESULTS)
    for key, job in jobs.items():
        done = app.get_job(job.id)
        assert done.state == "completed" == ferroq.JobState.COMPLETED
        assert done.result == RESULTS[key], key
        assert done.attempts == 1 and done.error is None
        assert done.attempted_at is not None and done.done_at is not None
        assert done.attempted_at <= done.done_at


def test_performer_sees_its_running_job(app_factory):
    app = app_factory(worker_name="node-7")
    seen = {}

    @app.performer("look")
    def look(job):
        seen.update(
            id=job.id,
            state=job.state,
            attempts=job.attempts,
            queue=job.queue,
            action=job.action,
            params=job.params,
            attempted_by=job.attempted_by,
            attempted_at=job.attempted_at,
            scope=job.scope,
        )

    job = app.create_job("q", "look", {"x": [1]})
    assert app.drain() == 1
    assert seen["id"] == job.id and seen["state"] == "running" and seen["attempts"] == 1
    assert (seen["queue"], seen["action"], seen["params"], seen["scope"]) == ("q", "look", {"x": [1]}, "default")
    assert seen["attempted_at"] is not None
    assert "node-7" in seen["attempted_by"]
    assert "node-7" in app.get_job(job.id).attempted_by


def test_bare_performer_decorator_uses_the_function_name(app_factory):
    app = app_factory()

    @app.performer
    def my_action(job):
        return "bare"

    job = app.create_job("q", "my_action")
    assert app.drain() == 1
    assert app.get_job(job.id).result == "bare"


@pytest.mark.parametrize("how", ["return_fail", "raise"])
def test_failed_attempt_is_retryable_with_the_reason(app_factory, how):
    app = app_factory()

    @app.performer("charge", backoff=lambda job: 60)
    def charge(job):
        if how == "return_fail":
            return ferroq.Fail("card declined")
        raise ValueError("card declined")

    job = app.create_job("q", "charge")
    assert app.drain() == 1
    failed = app.get_job(job.id)
    assert failed.state == "retryable" and failed.attempts == 1
    assert "card declined" in failed.error
    assert 55 <= seconds(failed.attempted_at, failed.next_attempt_at) <= 65
    assert app.drain() == 0, "a retry that is not due yet ran"


def test_an_uncounted_snooze_gives_the_attempt_back_and_waits_at_least_a_second(app_factory):
    app = app_factory(poll_interval=60)
    runs = []

    @app.performer("snoozy")
    def snoozy(job):
        runs.append((time.monotonic(), job.attempts))
        if len(runs) <= 2:
            return ferroq.Snooze(0, count_attempt=False)
        return "awake"

    job = app.create_job("q", "snoozy", max_attempts=1)
    app.start()
    done = wait_for_job(app, job.id, "completed", timeout=10)
    assert done.result == "awake"
    assert done.attempts == 1
    assert [a for _, a in runs] == [1, 1, 1]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(runs)]
    assert all(g >= 0.95 for g in gaps), f"an uncounted Snooze(0) ran again within a second: {gaps}"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_snooze_counts_toward_max_attempts_and_the_last_one_fails(app_factory, kind):
    app = app_factory(poll_interval=60)
    runs: list[int] = []
    hooked: list[tuple[int, str]] = []

    def alert(job, error):
        hooked.append((job.attempts, error))

    if kind == "sync":

        @app.performer("snoozy", on_failure=alert)
        def snoozy(job):
            runs.append(job.attempts)
            return ferroq.Snooze(0.05)

    else:

        @app.performer("snoozy", on_failure=alert)
        async def snoozy(job):
            runs.append(job.attempts)
            return ferroq.Snooze(0.05)

    job = app.create_job("q", "snoozy", max_attempts=3)
    app.start()
    failed = wait_for_job(app, job.id, "failed", timeout=10)
    assert runs == [1, 2, 3], "attempts must count up through snoozes, never back"
    assert failed.attempts == 3 and "snoozed on its last attempt" in failed.error
    assert hooked == [(3, failed.error)]


def test_an_async_on_failure_hook_runs_when_an_async_performer_returns_fail(app_factory):
    app = app_factory(poll_interval=60)
    hooked: list[str] = []

    async def alert(job, error):
        await asyncio.sleep(0)
        hooked.append(error)

    @app.performer("flaky", on_failure=alert)
    async def flaky(job):
        return ferroq.Fail("no luck")

    job = app.create_job("q", "flaky", max_attempts=1)
    app.start()
    failed = wait_for_job(app, job.id, "failed", timeout=10)
    assert hooked == ["no luck"]
    assert failed.error == "no luck"


def test_discard_ends_the_job_without_retry(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()

    @app.performer("picky")
    def picky(job):
        with rec.run(job):
            return ferroq.Discard("bad data")

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    j1 = app.create_job("q", "picky")
    j2 = app.create_job("q", "ok")
    app.start()
    wait_for_job(app, j2.id, "completed")
    discarded = app.get_job(j1.id)
    assert discarded.state == "discarded" and "bad data" in discarded.error
    assert discarded.attempts == 1
    assert rec.count(j1.id) == 1


# --- transactional completion -------------------------------------------------------------


@pytest.mark.parametrize("after", ["return", "raise_after_commit", "rollback_then_raise"])
def test_job_complete_inside_the_performers_transaction(app_factory, database_url, db, after):
    db.execute("CREATE TABLE receipts (job_id bigint PRIMARY KEY)")
    app = app_factory(poll_interval=60)
    rec = Recorder()
    seen = {}

    @app.performer("pay", backoff=lambda job: 60)
    def pay(job):
        with rec.run(job):
            with transaction_connection(database_url) as conn:
                execute_in(conn, "INSERT INTO receipts VALUES (%s)", (job.id,))
                seen["complete"] = job.complete(conn)
                with RawDb.connect(database_url) as other:
                    seen["state_before_commit"] = other.scalar("SELECT state FROM ferroq_jobs WHERE id = %s", (job.id,))
                if after == "rollback_then_raise":
                    conn.rollback()
                else:
                    conn.commit()
            if after != "return":
                raise RuntimeError("after the transaction")

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    j1 = app.create_job("q", "pay")
    app.start()
    wait_until(lambda: "state_before_commit" in seen)
    assert seen["complete"] is True
    assert seen["state_before_commit"] == "running"

    if after == "rollback_then_raise":
        failed = wait_for_job(app, j1.id, "retryable")
        assert "after the transaction" in failed.error
        assert db.execute("SELECT count(*) FROM receipts").fetchone()[0] == 0
    else:
        done = wait_for_job(app, j1.id, "completed")
        assert done.attempts == 1
        # The next job of the blocking queue runs; the completed one is never retried.
        j2 = app.create_job("q", "ok")
        wait_for_job(app, j2.id, "completed", timeout=5)
        assert rec.count(j1.id) == 1
        assert app.get_job(j1.id).state == "completed"
        assert db.execute("SELECT job_id FROM receipts").fetchall() == [(j1.id,)]


# --- the job object and inspection API ------------------------------------------------------


def test_job_is_read_only(app_factory):
    app = app_factory()
    job = app.create_job("q", "a", {"x": 1})
    for attr, value in [
        ("state", "completed"),
        ("params", {}),
        ("attempts", 5),
        ("id", 1),
        ("result", 1),
        ("queue", "other"),
        ("error", "x"),
        ("new_attr", 1),
    ]:
        with pytest.raises(AttributeError):
            setattr(job, attr, value)
    assert job.state == "available" and job.params == {"x": 1}
    assert app.get_job(job.id).state == "available"


def test_get_job_unknown_id_is_none(app_factory):
    app = app_factory()
    job = app.create_job("q", "a")
    assert app.get_job(job.id + 1000) is None


@pytest.fixture
def listed(app_factory):
    """An app with four jobs in various states, plus one job of another scope."""
    app = app_factory()

    @app.performer("alpha_act")
    def alpha(job):
        return "ok"

    @app.performer("beta_act")
    def beta(job):
        return ferroq.Discard("Nope NEEDLE")

    j1 = app.create_job("q1", "alpha_act", {"user": "Alice"})
    j2 = app.create_job("q1", "beta_act", {"user": "bob"})
    assert app.drain() == 2
    j3 = app.create_job("q2", "alpha_act", {"user": "carol"}, delay=3600)
    j4 = app.create_job("q2", "beta_act", {"user": "dave"}, priority=5)
    app_factory(scope="elsewhere").create_job("q1", "alpha_act", {"user": "Alice"})
    return app, [j.id for j in (j1, j2, j3, j4)]


def _ids(jobs):
    return [j.id for j in jobs]


def test_list_jobs_filters(listed):
    app, (j1, j2, j3, j4) = listed
    assert _ids(app.list_jobs()) == [j1, j2, j3, j4]
    assert _ids(app.list_jobs(queue="q1")) == [j1, j2]
    assert _ids(app.list_jobs(action="alpha_act")) == [j1, j3]
    assert _ids(app.list_jobs(state="completed")) == [j1]
    assert _ids(app.list_jobs(state=ferroq.JobState.DISCARDED)) == [j2]
    assert _ids(app.list_jobs(state="scheduled")) == [j3]
    assert _ids(app.list_jobs(state=["scheduled", "available"])) == [j3, j4]
    assert _ids(app.list_jobs(state="failed")) == []
    assert _ids(app.list_jobs(queue="q2", action="beta_act")) == [j4]
    assert _ids(app.list_jobs(queue="q1", state="completed")) == [j1]
    assert _ids(app.list_jobs(queue="nope")) == []


def test_list_jobs_search(listed):
    app, (j1, j2, j3, j4) = listed
    assert _ids(app.list_jobs(search="alice")) == [j1]  # params, any case
    assert _ids(app.list_jobs(search="ALICE")) == [j1]
    assert _ids(app.list_jobs(search="needle")) == [j2]  # error
    assert _ids(app.list_jobs(search="BETA")) == [j2, j4]  # action
    assert _ids(app.list_jobs(search="zzz")) == []
    assert _ids(app.list_jobs(search="alpha", queue="q2")) == [j3]


def test_list_jobs_limit_offset_and_ordering(listed):
    app, (j1, j2, j3, j4) = listed
    assert _ids(app.list_jobs(limit=2)) == [j1, j2]
    assert _ids(app.list_jobs(limit=2, offset=1)) == [j2, j3]
    assert _ids(app.list_jobs(offset=3)) == [j4]
    assert _ids(app.list_jobs(descending=True)) == [j4, j3, j2, j1]
    assert _ids(app.list_jobs(order_by="id", descending=True, limit=1)) == [j4]
    assert _ids(app.list_jobs(order_by="scheduled_at", descending=True, limit=1)) == [j3]


def test_paginate_jobs(listed):
    app, (j1, j2, j3, j4) = listed
    page = app.paginate_jobs(page_size=3, page_number=1)
    assert isinstance(page, ferroq.Page)
    assert (_ids(page.data), page.total, page.page_number, page.page_size) == ([j1, j2, j3], 4, 1, 3)
    page = app.paginate_jobs(page_size=3, page_number=2)
    assert (_ids(page.data), page.total, page.page_number) == ([j4], 4, 2)
    page = app.paginate_jobs(page_size=3, page_number=3)
    assert (_ids(page.data), page.total) == ([], 4)
    page = app.paginate_jobs(page_size=1, page_number=2, queue="q1")
    assert (_ids(page.data), page.total) == ([j2], 2)
    page = app.paginate_jobs(search="beta", state=["discarded", "available"])
    assert (_ids(page.data), page.total, page.page_number, page.page_size) == ([j2, j4], 2, 1, 20)


# --- cancel, retry, drain -------------------------------------------------------------------


def test_cancel_job(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()
    gate = threading.Event()

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    @app.performer("hold")
    def hold(job):
        with rec.run(job):
            gate.wait(20)

    @app.performer("boom", backoff=lambda job: 60)
    def boom(job):
        with rec.run(job):
            raise RuntimeError("down")

    available = app.create_job("qa", "ok")
    scheduled = app.create_job("qs", "ok", delay=3600)
    for job in (available, scheduled):
        cancelled = app.cancel_job(job.id)
        assert cancelled.id == job.id and cancelled.state == "discarded"
        assert "cancelled" in cancelled.error
        assert app.get_job(job.id).state == "discarded"

    app.start()
    # A retryable job blocking its queue: cancelling it unblocks the queue.
    failing = app.create_job("qr", "boom")
    behind = app.create_job("qr", "ok")
    wait_for_job(app, failing.id, "retryable")
    assert app.cancel_job(failing.id).state == "discarded"
    wait_for_job(app, behind.id, "completed", timeout=5)

    # A finished job cannot be cancelled (a running one can: tests/test_queue_control.py).
    finished = app.create_job("qh", "hold")
    gate.set()
    wait_for_job(app, finished.id, "completed")
    with pytest.raises(ferroq.JobStateError):
        app.cancel_job(finished.id)

    after = app.create_job("qa", "ok")
    wait_for_job(app, after.id, "completed")
    assert rec.count(available.id) == 0 and rec.count(scheduled.id) == 0
    assert rec.count(failing.id) == 1
    with pytest.raises(ferroq.JobNotFoundError):
        app.cancel_job(after.id + 1000)


def test_retry_job_makes_scheduled_and_discarded_jobs_run_now(app_factory):
    app = app_factory(poll_interval=60)
    rec = Recorder()

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    @app.performer("picky")
    def picky(job):
        with rec.run(job):
            return ferroq.Discard("no")

    scheduled = app.create_job("q1", "ok", delay=3600)
    discarded = app.create_job("q2", "picky")
    app.start()
    wait_for_job(app, discarded.id, "discarded")

    retried = app.retry_job(scheduled.id)
    assert retried.state == "available"
    wait_for_job(app, scheduled.id, "completed", timeout=5)

    assert app.retry_job(discarded.id).state == "available"
    wait_until(lambda: rec.count(discarded.id) == 2, timeout=5)
    wait_for_job(app, discarded.id, "discarded")


def test_drain_runs_due_jobs_only(app_factory):
    app = app_factory()
    rec = Recorder()

    @app.performer("ok")
    def ok(job):
        with rec.run(job):
            pass

    @app.performer("boom", backoff=lambda job: 60)
    def boom(job):
        raise RuntimeError("x")

    due = [app.create_job("q1", "ok"), app.create_job("q1", "ok"), app.create_job("q2", "ok")]
    later = app.create_job("q3", "ok", delay=3600)
    assert app.drain() == 3
    assert [app.get_job(j.id).state for j in due] == ["completed"] * 3
    assert app.get_job(later.id).state == "scheduled" and rec.count(later.id) == 0
    assert app.drain() == 0

    failing = app.create_job("q4", "boom")
    assert app.drain() == 1
    assert app.get_job(failing.id).state == "retryable"
    assert app.drain() == 0


def test_drain_runs_every_due_job_of_a_blocking_queue(app_factory):
    # The queue's next job is due as soon as the previous one completed; drain() must not
    # return before running it. Repeated, because a race here shows up only now and then.
    app = app_factory()

    @app.performer("ok")
    def ok(job):
        return "ok"

    for round_ in range(40):
        jobs = [app.create_job("q", "ok", {"round": round_, "i": i}) for i in range(3)]
        ran = app.drain()
        states = [app.get_job(j.id).state for j in jobs]
        assert (ran, states) == (3, ["completed"] * 3), f"round {round_}"


# --- ferroq.testing ----------------------------------------------------------------------------


def test_testing_helpers(app_factory):
    app = app_factory()
    other = app_factory(scope="other")
    job = app.create_job("mail", "send", {"to": "a@b.c", "n": 1, "tags": ["x"]})

    assert assert_job_created(app).id == job.id
    found = assert_job_created(app, queue="mail", action="send", params={"to": "a@b.c"})
    assert isinstance(found, ferroq.Job) and found.id == job.id
    assert assert_job_created(app, params={"n": 1, "tags": ["x"]}).id == job.id

    with pytest.raises(AssertionError) as info:
        assert_job_created(app, queue="nomatch_queue")
    assert "nomatch_queue" in str(info.value)
    with pytest.raises(AssertionError) as info:
        assert_job_created(app, action="send", params={"to": "x@y.z"})
    assert "x@y.z" in str(info.value)
    with pytest.raises(AssertionError):
        assert_job_created(app, params={"n": 1, "extra": True})
    with pytest.raises(AssertionError):
        assert_job_created(other, queue="mail")

    refute_job_created(app, queue="nomatch_queue")
    refute_job_created(app, action="send", params={"to": "x@y.z"})
    refute_job_created(other)
    with pytest.raises(AssertionError):
        refute_job_created(app, action="send")
    with pytest.raises(AssertionError):
        refute_job_created(app, params={"to": "a@b.c"})


def test_result_that_is_not_json_fails_the_attempt_and_worker_keeps_running(app_factory):
    app = app_factory(poll_interval=60)

    @app.performer("weird")
    def weird(job):
        return {"when": object()}

    @app.performer("ok")
    def ok(job):
        return "ok"

    bad = app.create_job("q", "weird", max_attempts=1)
    after = app.create_job("q", "ok")
    app.start()
    ended = wait_for_job(app, bad.id, ("failed", "discarded"))
    assert ended.error, "a result that cannot be stored left no error"
    assert wait_for_job(app, after.id, "completed").result == "ok"
