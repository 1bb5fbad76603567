"""Bad input raises a specific error and writes nothing; hostile names are plain data."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta

import pytest
from helpers import count_jobs, stays_true, wait_for_job

import ferroq

E = ferroq


def test_error_hierarchy():
    for name in (
        "ConfigurationError",
        "UnsupportedDatabaseError",
        "InvalidJobError",
        "InvalidNameError",
        "InvalidParamsError",
        "ParamsTooLargeError",
        "InvalidScheduleError",
        "InvalidOptionError",
        "DatabaseError",
        "JobNotFoundError",
        "JobStateError",
    ):
        assert issubclass(getattr(ferroq, name), ferroq.FerroqError), name
    assert issubclass(E.FerroqError, Exception)
    assert issubclass(E.UnsupportedDatabaseError, E.ConfigurationError)
    assert issubclass(E.InvalidJobError, ValueError)
    for sub in (
        E.InvalidNameError,
        E.InvalidParamsError,
        E.ParamsTooLargeError,
        E.InvalidScheduleError,
        E.InvalidOptionError,
    ):
        assert issubclass(sub, E.InvalidJobError), sub
    assert issubclass(E.JobNotFoundError, LookupError)


NAIVE = datetime(2030, 1, 1, 12, 0, 0)

BAD_JOBS = [
    # (error, positional args, keyword args)
    pytest.param(E.InvalidNameError, ("", "a"), {}, id="empty-queue"),
    pytest.param(E.InvalidNameError, ("q", ""), {}, id="empty-action"),
    pytest.param(E.InvalidNameError, ("x" * 256, "a"), {}, id="long-queue"),
    pytest.param(E.InvalidNameError, ("q", "x" * 256), {}, id="long-action"),
    pytest.param(E.InvalidNameError, (123, "a"), {}, id="int-queue"),
    pytest.param(E.InvalidNameError, (None, "a"), {}, id="none-queue"),
    pytest.param(E.InvalidNameError, ("q", b"a"), {}, id="bytes-action"),
    pytest.param(E.InvalidParamsError, ("q", "a", {"x": object()}), {}, id="object-params"),
    pytest.param(E.InvalidParamsError, ("q", "a", {"x": {1, 2}}), {}, id="set-params"),
    pytest.param(E.InvalidParamsError, ("q", "a", {"x": b"bytes"}), {}, id="bytes-params"),
    pytest.param(E.InvalidParamsError, ("q", "a", {"x": float("nan")}), {}, id="nan-params"),
    pytest.param(E.InvalidScheduleError, ("q", "a"), {"scheduled_at": NAIVE}, id="naive-datetime"),
    pytest.param(
        E.InvalidScheduleError, ("q", "a"), {"scheduled_at": NAIVE.astimezone(), "delay": 5}, id="scheduled-and-delay"
    ),
    pytest.param(E.InvalidScheduleError, ("q", "a"), {"delay": -1}, id="negative-delay"),
    pytest.param(E.InvalidScheduleError, ("q", "a"), {"delay": timedelta(seconds=-5)}, id="negative-timedelta"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"timeout": 0}, id="zero-timeout"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"timeout": -1.5}, id="negative-timeout"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"max_attempts": 0}, id="zero-attempts"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"max_backoff": -1}, id="negative-backoff"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"priority": 1.5}, id="float-priority"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"priority": "1"}, id="str-priority"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"max_attempts": 2**63}, id="huge-attempts"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"priority": 2**100}, id="huge-priority"),
    pytest.param(E.InvalidOptionError, ("q", "a"), {"priority": -(2**100)}, id="huge-negative-priority"),
    pytest.param(E.InvalidScheduleError, ("q", "a"), {"delay": 1e300}, id="delay-beyond-any-calendar"),
    pytest.param(E.InvalidScheduleError, ("q", "a"), {"delay": timedelta(days=365 * 101)}, id="delay-over-100-years"),
]


@pytest.mark.parametrize("error, args, kwargs", BAD_JOBS)
def test_create_job_rejects_bad_input_and_writes_nothing(app_factory, db, error, args, kwargs):
    app = app_factory()
    with pytest.raises(error):
        app.create_job(*args, **kwargs)
    assert count_jobs(db) == 0


@pytest.mark.parametrize("error, args, kwargs", BAD_JOBS)
def test_acreate_job_rejects_bad_input_and_writes_nothing(app_factory, db, error, args, kwargs):
    import asyncio

    app = app_factory()

    async def main():
        await app.acreate_job(*args, **kwargs)

    with pytest.raises(error):
        asyncio.run(main())
    assert count_jobs(db) == 0


def test_names_of_255_characters_are_accepted(app_factory):
    app = app_factory(scope="s" * 255)
    job = app.create_job("q" * 255, "a" * 255)
    assert (job.scope, job.queue, job.action) == ("s" * 255, "q" * 255, "a" * 255)


def test_create_jobs_with_one_bad_item_writes_nothing(app_factory, db):
    app = app_factory()
    good = {"queue": "q", "action": "a", "params": {"i": 1}}
    for bad, error in [
        ({"queue": "", "action": "a"}, E.InvalidNameError),
        ({"queue": "q", "action": "a", "params": {"x": float("nan")}}, E.InvalidParamsError),
        ({"queue": "q", "action": "a", "delay": -3}, E.InvalidScheduleError),
        ({"queue": "q", "action": "a", "max_attempts": 0}, E.InvalidOptionError),
    ]:
        with pytest.raises(error):
            app.create_jobs([good, dict(good), bad, dict(good)])
        assert count_jobs(db) == 0, bad


def test_params_too_large(app_factory, db):
    app = app_factory(max_params_size=1000)
    with pytest.raises(E.ParamsTooLargeError):
        app.create_job("q", "a", {"blob": "x" * 2000})
    with pytest.raises(E.ParamsTooLargeError):
        app.create_jobs([{"queue": "q", "action": "a", "params": {"blob": "x" * 2000}}])
    assert count_jobs(db) == 0
    job = app.create_job("q", "a", {"blob": "x" * 500})
    assert app.get_job(job.id).params == {"blob": "x" * 500}


def test_default_max_params_size_is_one_mebibyte(app_factory, db):
    app = app_factory()
    with pytest.raises(E.ParamsTooLargeError):
        app.create_job("q", "a", {"blob": "x" * (1024 * 1024 + 10)})
    assert count_jobs(db) == 0
    job = app.create_job("q", "a", {"blob": "x" * (1024 * 1024 - 100)})
    assert len(app.get_job(job.id).params["blob"]) == 1024 * 1024 - 100


@pytest.mark.parametrize("value", ["nul\u0000byte", "lone \ud800 surrogate"], ids=["nul", "surrogate"])
def test_awkward_strings_are_rejected_or_stored_losslessly(app_factory, db, value):
    app = app_factory()
    try:
        job = app.create_job("q", "a", {"s": value})
    except E.InvalidParamsError:
        assert count_jobs(db) == 0
    else:
        assert app.get_job(job.id).params == {"s": value}


@pytest.mark.parametrize("scope", ["", "x" * 256, 7])
def test_bad_scope(database_url, scope):
    with pytest.raises(E.InvalidNameError):
        ferroq.App(database_url, scope=scope)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"concurrency": -1},
        {"poll_interval": -1},
        {"lease_ttl": 0},
        {"lease_ttl": -2},
        {"queues": {"emails": 0}},
        {"queues": {"emails": -3}},
        {"stop_timeout": -1},
        {"statement_timeout": 0},
        {"statement_timeout": -1},
        # The server's idle_in_transaction_session_timeout takes it in int milliseconds.
        {"statement_timeout": 25 * 24 * 3600},
        {"statement_timeout": "10"},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bad_app_options(database_url, kwargs):
    with pytest.raises(E.ConfigurationError):
        ferroq.App(database_url, **kwargs)


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "redis://localhost:6379/0"])
def test_unsupported_database_url(url):
    with pytest.raises(E.UnsupportedDatabaseError):
        ferroq.App(url)


def _app_or_database_error(url, **kw):
    """``ferroq.App(url)``, or None if the constructor itself (eagerly connecting) raised
    DatabaseError, which it must do within 10 s."""
    started = time.monotonic()
    try:
        return ferroq.App(url, **kw)
    except E.DatabaseError:
        assert time.monotonic() - started < 10
        return None


def test_unreachable_database_raises_database_error_quickly():
    app = _app_or_database_error("postgresql://postgres@127.0.0.1:1/x", stop_timeout=2)
    if app is None:
        return
    for call in (app.migrate, lambda: app.create_job("q", "a"), lambda: app.get_job(1), lambda: app.list_jobs()):
        started = time.monotonic()
        with pytest.raises(E.DatabaseError):
            call()
        assert time.monotonic() - started < 10


def test_silent_server_raises_database_error_within_connect_timeout():
    # A socket that accepts TCP connections but never answers: connect_timeout must bound it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    try:
        app = _app_or_database_error(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=1.0, stop_timeout=2)
        if app is None:
            return
        started = time.monotonic()
        with pytest.raises(E.DatabaseError):
            app.create_job("q", "a")
        assert time.monotonic() - started < 8
    finally:
        server.close()


@pytest.mark.not_on(
    "sqlite",
    reason="SQLite creates the schema on first use; covered by "
    "test_sqlite.py::test_zero_setup_default_database_in_working_directory",
)
def test_queries_before_migrate_raise_database_error(app_factory):
    app = app_factory(migrate=False)
    with pytest.raises(E.DatabaseError):
        app.create_job("q", "a")


def test_unknown_job_ids(app_factory):
    app = app_factory()
    assert app.get_job(987654321) is None
    with pytest.raises(E.JobNotFoundError):
        app.retry_job(987654321)
    with pytest.raises(LookupError):
        app.cancel_job(987654321)


def test_unknown_action_waits_unclaimed_and_the_worker_keeps_running(app_factory):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("known")
    def known(job):
        ran.append(job.id)

    app.start()
    unknown = app.create_job("q1", "no_such_action", max_attempts=1)
    behind = app.create_job("q1", "known")  # blocking FIFO: waits behind the unserved head
    other = app.create_job("q2", "known")
    wait_for_job(app, other.id, "completed")
    assert stays_true(lambda: app.get_job(behind.id).state == "available", 0.5)
    waiting = app.get_job(unknown.id)
    assert (waiting.state, waiting.attempts, waiting.error) == ("available", 0, None)
    # Cancelling the unserved head lets its queue go on.
    app.cancel_job(unknown.id)
    wait_for_job(app, behind.id, "completed")
    assert ran == [other.id, behind.id]


HOSTILE = [
    "q'; DROP TABLE ferroq_jobs; --",
    "a\"b'c;$$ $tag$ \\ %s %(x)s",
    "队列 ✓",
    "line\nbreak\ttab",
    "ferroq_jobs.*",
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_round_trip_as_data(app_factory, db, name):
    app = app_factory(scope=name, poll_interval=60)
    other = app_factory()
    seen = []

    @app.performer(name)
    def perform(job):
        seen.append((job.scope, job.queue, job.action, job.params))
        return {"echo": job.params["v"]}

    job = app.create_job(name, name, {"v": name, name: [name]})
    assert (job.scope, job.queue, job.action) == (name, name, name)
    fetched = app.get_job(job.id)
    assert (fetched.scope, fetched.queue, fetched.action, fetched.params) == (
        name,
        name,
        name,
        {"v": name, name: [name]},
    )
    assert [j.id for j in app.list_jobs(queue=name, action=name)] == [job.id]
    assert [j.id for j in app.list_jobs(search=name)] == [job.id]
    assert other.list_jobs() == []

    app.start()
    done = wait_for_job(app, job.id, "completed")
    assert done.result == {"echo": name}
    assert seen == [(name, name, name, {"v": name, name: [name]})]
    assert count_jobs(db) == 1  # the table is still there and holds exactly this job
