"""Creating jobs: fields and defaults, bulk and async creation, transactional enqueue."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers import count_jobs, db_now, job_row, stays_true, transaction_connection, wait_for_job, wait_until
from psycopg.rows import dict_row

import ferroq


def _is_utc_aware(value: datetime) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_create_job_defaults(app_factory, db):
    app = app_factory()
    before = db_now(db)
    job = app.create_job("mails_queue_1", "send_mail", {"to": "a@b.c", "n": [1, 2.5, None, True]})
    after = db_now(db)

    assert isinstance(job, ferroq.Job)
    assert isinstance(job.id, int)
    assert job.scope == "default"
    assert job.queue == "mails_queue_1"
    assert job.action == "send_mail"
    assert job.params == {"to": "a@b.c", "n": [1, 2.5, None, True]}
    assert job.state == "available" == ferroq.JobState.AVAILABLE
    assert job.attempts == 0
    assert job.max_attempts == 20
    assert job.timeout == 60.0
    assert job.max_backoff == 86400.0
    assert job.priority == 0
    assert job.error is None and job.result is None
    assert job.attempted_at is None and job.attempted_by is None and job.done_at is None
    assert _is_utc_aware(job.scheduled_at) and _is_utc_aware(job.inserted_at)
    slack = timedelta(seconds=1)
    assert before - slack <= job.scheduled_at <= after + slack
    assert before - slack <= job.inserted_at <= after + slack

    row = job_row(db, job.id)
    assert row["state"] == "available"
    assert row["scope"] == "default" and row["queue"] == "mails_queue_1"
    assert row["params"] == {"to": "a@b.c", "n": [1, 2.5, None, True]}

    fetched = app.get_job(job.id)
    for field in (
        "id",
        "scope",
        "queue",
        "action",
        "params",
        "priority",
        "sequence",
        "state",
        "attempts",
        "max_attempts",
        "timeout",
        "max_backoff",
        "scheduled_at",
        "inserted_at",
        "error",
        "result",
    ):
        assert getattr(fetched, field) == getattr(job, field), field


def test_create_job_options_are_stored(app_factory):
    app = app_factory(scope="billing")
    job = app.create_job("q", "charge", {"k": "v"}, timeout=5, max_backoff=10.5, max_attempts=3, priority=7)
    fetched = app.get_job(job.id)
    for j in (job, fetched):
        assert j.scope == "billing"
        assert j.timeout == 5.0 and isinstance(j.timeout, float)
        assert j.max_backoff == 10.5
        assert j.max_attempts == 3
        assert j.priority == 7


def test_sequence_follows_creation_order(app_factory):
    app = app_factory()
    jobs = [app.create_job("q", "a", {"i": i}) for i in range(5)]
    sequences = [j.sequence for j in jobs]
    assert sequences == sorted(sequences) and len(set(sequences)) == 5
    assert [app.get_job(j.id).params["i"] for j in jobs] == list(range(5))


@pytest.mark.parametrize("delay", [30, 30.0, timedelta(seconds=30)])
def test_delay_schedules_the_job(app_factory, db, delay):
    app = app_factory()
    before = db_now(db)
    job = app.create_job("q", "a", delay=delay)
    after = db_now(db)
    assert job.state == "scheduled"
    assert job_row(db, job.id)["state"] == "scheduled"
    assert before + timedelta(seconds=29) <= job.scheduled_at <= after + timedelta(seconds=31)


def test_scheduled_at_is_stored_as_the_same_instant_in_utc(app_factory):
    app = app_factory()
    tz = timezone(timedelta(hours=5, minutes=30))
    when = (datetime.now(timezone.utc) + timedelta(hours=1)).astimezone(tz)
    when = when.replace(microsecond=123456)
    job = app.create_job("q", "a", scheduled_at=when)
    fetched = app.get_job(job.id)
    for j in (job, fetched):
        assert j.state == "scheduled"
        assert j.scheduled_at == when
        assert _is_utc_aware(j.scheduled_at)


def test_scheduled_at_in_the_past_is_available(app_factory):
    app = app_factory()
    job = app.create_job("q", "a", scheduled_at=datetime.now(timezone.utc) - timedelta(hours=1))
    assert job.state == "available"


def test_create_jobs_bulk(app_factory, db):
    app = app_factory()
    jobs = app.create_jobs(
        [
            {"queue": "q1", "action": "a", "params": {"i": 1}},
            {"queue": "q2", "action": "b", "params": {"i": 2}, "delay": 60, "priority": 3},
            {"queue": "q1", "action": "c", "params": {"i": 3}, "max_attempts": 2, "timeout": 9},
        ]
    )
    assert [type(j) for j in jobs] == [ferroq.Job] * 3
    assert [(j.queue, j.action, j.params) for j in jobs] == [
        ("q1", "a", {"i": 1}),
        ("q2", "b", {"i": 2}),
        ("q1", "c", {"i": 3}),
    ]
    assert len({j.id for j in jobs}) == 3
    assert [j.state for j in jobs] == ["available", "scheduled", "available"]
    assert jobs[1].priority == 3
    assert jobs[2].max_attempts == 2 and jobs[2].timeout == 9.0
    assert jobs[0].sequence < jobs[2].sequence
    assert count_jobs(db) == 3
    for j in jobs:
        assert app.get_job(j.id).params == j.params


def test_create_jobs_empty_list(app_factory, db):
    app = app_factory()
    assert app.create_jobs([]) == []
    assert count_jobs(db) == 0


def test_acreate_job_and_acreate_jobs(app_factory, db):
    app = app_factory()

    async def main():
        one = await app.acreate_job("q", "a", {"x": 1}, priority=2)
        many = await app.acreate_jobs(
            [
                {"queue": "q", "action": "a", "params": {"x": 2}},
                {"queue": "r", "action": "b", "params": {"x": 3}, "delay": timedelta(minutes=5)},
            ]
        )
        return one, many

    one, many = asyncio.run(main())
    assert isinstance(one, ferroq.Job) and one.params == {"x": 1} and one.priority == 2
    assert [j.params for j in many] == [{"x": 2}, {"x": 3}]
    assert [j.state for j in many] == ["available", "scheduled"]
    assert count_jobs(db) == 3
    assert app.get_job(many[1].id).queue == "r"


def test_async_enqueue_runs_on_a_started_app(app_factory):
    app = app_factory(poll_interval=60)
    seen = []

    @app.performer("a")
    async def a(job):
        seen.append(job.params["x"])
        return job.params["x"] * 2

    app.start()

    async def main():
        return await app.acreate_job("q", "a", {"x": 21})

    job = asyncio.run(main())
    assert wait_for_job(app, job.id, "completed").result == 42
    assert seen == [21]


def test_transactional_enqueue_rollback_writes_nothing(app_factory, database_url, db):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("a")
    def a(job):
        ran.append(job.id)

    app.start()
    with transaction_connection(database_url) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        job = app.create_job("q", "a", {"order": 1}, connection=conn)
        assert isinstance(job, ferroq.Job)
        conn.rollback()

    assert count_jobs(db) == 0
    assert app.get_job(job.id) is None
    assert app.list_jobs() == []
    # A later job in the same queue runs, and the rolled-back one never does.
    later = app.create_job("q", "a")
    wait_for_job(app, later.id, "completed")
    assert ran == [later.id]


def test_transactional_enqueue_is_invisible_until_commit_then_runs(app_factory, database_url, db):
    app = app_factory(poll_interval=60)
    ran = threading.Event()

    @app.performer("a")
    def a(job):
        ran.set()
        return "done"

    app.start()
    with transaction_connection(database_url) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        job = app.create_job("q", "a", {"order": 1}, connection=conn)
        # Not visible to others and not run while the transaction is open.
        assert stays_true(lambda: count_jobs(db) == 0 and not ran.is_set(), 1.0)
        conn.commit()

    # Announced at COMMIT: runs promptly although the safety poll is a minute away.
    done = wait_for_job(app, job.id, "completed", timeout=5)
    assert done.result == "done"
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 1


def test_new_job_created_by_another_app_is_picked_up(app_factory):
    producer = app_factory()
    worker = app_factory(poll_interval=60)
    done = []

    @worker.performer("a")
    def a(job):
        done.append(job.id)

    worker.start()
    job = producer.create_job("q", "a")
    wait_until(lambda: done == [job.id], timeout=5)


@pytest.mark.not_on(
    "sqlite",
    reason="SQLite has one writer per file: while the caller's "
    "transaction holds the write lock no other job can be committed, so a job "
    "cannot be created and run while an earlier one waits to commit",
)
def test_job_committed_late_is_not_skipped_in_its_blocking_queue(app_factory, database_url):
    # The first job of the queue is created inside a transaction that commits after a later
    # job was committed and run: it must still run once visible (FIFO over visible jobs).
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("a")
    def a(job):
        ran.append(job.id)

    app.start()
    with transaction_connection(database_url) as conn:
        early = app.create_job("q", "a", {"n": 1}, connection=conn)
        late = app.create_job("q", "a", {"n": 2})
        wait_for_job(app, late.id, "completed", timeout=5)
        conn.commit()
    wait_for_job(app, early.id, "completed", timeout=5)
    assert ran == [late.id, early.id]


def test_app_as_context_manager_starts_and_stops(app_factory, db):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("a")
    def a(job):
        ran.append(job.id)

    with app:
        job = app.create_job("q", "a")
        wait_for_job(app, job.id, "completed")
    after = app.create_job("q", "a")
    app.notify()
    assert stays_true(lambda: app.get_job(after.id).state == "available", 1.0), "a stopped app still ran jobs"
    assert ran == [job.id]


def test_notify_wakes_a_started_app(app_factory):
    app = app_factory(poll_interval=60)
    idle = app_factory()
    idle.notify()  # harmless on an app that is not started

    @app.performer("a")
    def a(job):
        return "ok"

    app.start()
    job = idle.create_job("q", "a")
    app.notify()
    assert wait_for_job(app, job.id, "completed", timeout=5).result == "ok"


def test_close_stops_the_worker_and_the_app_stays_usable(app_factory):
    app = app_factory(poll_interval=60)

    @app.performer("a")
    def a(job):
        return "ok"

    app.start()
    first = app.create_job("q", "a")
    wait_for_job(app, first.id, "completed")
    app.close()  # stops the worker and closes the pool
    assert not app.running
    app.close()  # closing twice is harmless

    # A later call opens a new pool.
    job = app.create_job("q", "a")
    assert stays_true(lambda: app.get_job(job.id).state == "available", 0.3), "a closed app still ran jobs"
    assert app.drain() == 1
    assert app.get_job(job.id).result == "ok"
    app.close()


def test_job_created_by_another_app_right_after_start_is_picked_up(app_factory):
    # The moment a worker starts is the riskiest for a missed wake-up: it has looked once and
    # is only beginning to watch. Repeated, as a race shows up only now and then.
    producer = app_factory()
    for round_ in range(5):
        worker = app_factory(migrate=False, poll_interval=60)
        worker.performer("a")(lambda job: "ok")
        worker.start()
        job = producer.create_job(f"q{round_}", "a")
        wait_for_job(worker, job.id, "completed", timeout=5)
        worker.stop()


def test_job_state_is_a_job_state_that_compares_with_its_name(app_factory):
    app = app_factory()
    job = app.create_job("q", "a")
    assert job.state is ferroq.JobState.AVAILABLE
    assert job.state == "available" and f"{job.state}" == "available"
    assert [j.state for j in app.list_jobs(state=ferroq.JobState.AVAILABLE)] == [ferroq.JobState.AVAILABLE]


def test_a_performer_knows_whether_its_attempt_is_the_last(app_factory):
    app = app_factory()
    seen: dict[int, list[bool]] = {}

    @app.performer("a")
    def perform(job):
        seen.setdefault(job.id, []).append(job.is_last_attempt)
        return ferroq.Fail("again")

    once = app.create_job("q1", "a", max_attempts=1)
    twice = app.create_job("q2", "a", max_attempts=2, max_backoff=0)

    def second_attempt_ran() -> bool:
        app.drain()  # the retry is due at once (max_backoff=0)
        return len(seen.get(twice.id, [])) == 2

    wait_until(second_attempt_ran)
    assert seen[once.id] == [True]
    assert seen[twice.id] == [False, True]
    assert app.get_job(once.id).state == "failed"


def _positionless_rows(conn) -> None:
    """Make ``conn`` hand out rows that cannot be read by position, as apps often do."""
    if isinstance(conn, sqlite3.Connection):
        conn.row_factory = lambda cursor, row: {d[0]: v for d, v in zip(cursor.description, row, strict=True)}
    else:
        conn.row_factory = dict_row


def test_transactional_enqueue_keeps_params_exact_whatever_the_row_factory(app_factory, database_url):
    app = app_factory()
    params = {"id": 2**64, "z": 1, "a": [1.5, "é"]}
    with transaction_connection(database_url) as conn:
        _positionless_rows(conn)
        job = app.create_job("q", "a", params, connection=conn)
    assert job.params == params  # a float would have rounded 2**64
    stored = app.get_job(job.id)
    assert stored is not None and stored.params == params


@pytest.mark.timeout(30)
def test_first_use_inside_the_callers_write_transaction_does_not_wait_for_it(app_factory, database_url):
    app_factory()  # the schema exists; the App below has not used the database yet
    fresh = app_factory(migrate=False)
    with transaction_connection(database_url) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")  # the caller holds the write lock now
        started = time.monotonic()
        job = fresh.create_job("q", "a", connection=conn)
        assert time.monotonic() - started < 10, "the first use waited for the caller's own transaction"
    assert fresh.get_job(job.id) is not None


def test_a_performers_defaults_fill_what_create_job_leaves_out(app_factory):
    app = app_factory()

    @app.performer("email:send", priority=50, max_attempts=3, timeout=timedelta(seconds=5), max_backoff=10)
    def send(job):
        return None

    default = app.create_job("q", "email:send")
    assert (default.priority, default.max_attempts, default.timeout, default.max_backoff) == (50, 3, 5.0, 10.0)
    explicit = app.create_job("q", "email:send", priority=1, max_attempts=7)
    assert (explicit.priority, explicit.max_attempts, explicit.timeout) == (1, 7, 5.0)
    bulk = app.create_jobs([{"queue": "q", "action": "email:send"}, {"queue": "q", "action": "other"}])
    assert [(j.priority, j.max_attempts) for j in bulk] == [(50, 3), (0, 20)]
    assert app.get_job(default.id).priority == 50


def test_a_performers_bad_defaults_are_refused_when_it_is_registered(app_factory, db):
    app = app_factory()
    with pytest.raises(ferroq.InvalidOptionError, match="max_attempts"):
        app.performer("a", max_attempts=0)(lambda job: None)
    with pytest.raises(ferroq.InvalidOptionError, match="timeout"):
        app.performer("a", timeout=-1)(lambda job: None)
    app.create_job("q", "a")
    assert app.list_jobs()[0].max_attempts == 20
    assert count_jobs(db) == 1


def test_performer_signature_mistakes_are_caught_at_registration(app_factory):
    app = app_factory()

    def no_arguments():
        return None

    def one_argument(job):
        return None

    with pytest.raises(ferroq.ConfigurationError, match=r"performer of 'x'.*\(job\)"):
        app.performer("x")(no_arguments)
    with pytest.raises(ferroq.ConfigurationError, match=r"on_failure of 'y'.*\(job, error\)"):
        app.performer("y", on_failure=one_argument)(one_argument)
    with pytest.raises(ferroq.ConfigurationError, match="backoff of 'z'"):
        app.performer("z", backoff=no_arguments)(one_argument)
    # What the documented calls can bind is accepted: defaults, *args, async def.
    app.performer("ok1", on_failure=lambda job, error, extra=None: None)(lambda job, *rest: None)

    async def async_ok(job):
        return None

    app.performer(async_ok)
    assert app.drain() == 0


def test_sqlite_synchronous_reads_the_durability_of_sqlite_only(app_factory, backend):
    # An acknowledged enqueue survives an OS crash by default on SQLite; PostgreSQL has no
    # such setting here (its commit is durable).
    app = app_factory()
    app.create_job("q", "a")
    assert app.sqlite_synchronous() == ("full" if backend == "sqlite" else None)
