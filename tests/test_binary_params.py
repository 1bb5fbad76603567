"""Bytes params (EctoJob's ``params_type: :binary``): stored as given, given back as ``bytes``
on every way in (pooled ``create_job``/``create_jobs``, the caller's connection) and every way
out (the performer, ``get_job``, ``list_jobs``); JSON params are unchanged beside them."""

from __future__ import annotations

import asyncio

import pytest
from caller_drivers import DRIVERS, Driver
from helpers import count_jobs

import ferroq
from ferroq.testing import assert_job_created

EVERY_BYTE = bytes(range(256))

#: Bytes that JSON text cannot hold or that look like something else, and must stay bytes.
ODD_BYTES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00", id="nul"),
    pytest.param(b"a\x00b\x00", id="nuls-inside"),
    pytest.param(b"\xff\xfe\xc3(", id="invalid-utf8"),
    pytest.param(b"null", id="json-null-as-bytes"),
    pytest.param(b'{"n": 1}', id="json-text-as-bytes"),
    pytest.param("é\u2603".encode(), id="utf8-text-as-bytes"),
]


def _recording_app(app_factory, **kw):
    """An App whose performer for action ``"a"`` records each job's params by id."""
    app = app_factory(poll_interval=60, **kw)
    seen: dict[int, object] = {}

    @app.performer("a")
    def a(job):
        seen[job.id] = job.params

    return app, seen


def _assert_round_trip(app, seen, jobs, expected) -> None:
    """``jobs`` hold ``expected`` params in ``get_job``, ``list_jobs`` and their performer,
    each of the type it was given (bytes stay ``bytes``, JSON stays JSON)."""
    ids = [job.id for job in jobs]

    def same(got, want) -> bool:
        return type(got) is type(want) and got == want

    listed = {job.id: job.params for job in app.list_jobs(limit=1000)}
    for job_id, want in zip(ids, expected, strict=True):
        assert same(app.get_job(job_id).params, want), f"get_job({job_id})"
        assert same(listed[job_id], want), f"list_jobs, job {job_id}"
    assert app.drain() == len(ids)
    for job_id, want in zip(ids, expected, strict=True):
        assert same(seen[job_id], want), f"the performer of job {job_id} got {seen[job_id]!r}"
        assert app.get_job(job_id).state == "completed"


def test_every_byte_value_round_trips(app_factory):
    app, seen = _recording_app(app_factory)
    job = app.create_job("q", "a", EVERY_BYTE)
    assert type(job.params) is bytes and job.params == EVERY_BYTE, "create_job returns the bytes"
    _assert_round_trip(app, seen, [job], [EVERY_BYTE])


@pytest.mark.parametrize("value", ODD_BYTES)
def test_bytes_no_json_text_could_hold_come_back_as_given(app_factory, value):
    app, seen = _recording_app(app_factory)
    job = app.create_job("q", "a", value)
    _assert_round_trip(app, seen, [job], [value])


def test_bytes_likes_are_stored_as_bytes(app_factory):
    app, seen = _recording_app(app_factory)
    jobs = [
        app.create_job("q", "a", bytearray(b"\x00array\xff")),
        app.create_job("q", "a", memoryview(b"\x00view\xff")),
        app.create_job("q", "a", memoryview(b"--sliced--")[2:8]),
    ]
    _assert_round_trip(app, seen, jobs, [b"\x00array\xff", b"\x00view\xff", b"sliced"])


def test_a_mixed_batch_keeps_each_jobs_params_and_order(app_factory):
    app, seen = _recording_app(app_factory)
    batch = [{"n": 1}, EVERY_BYTE, [1, "two", None], b"", "text, not bytes", b"\x00\xff", 7, None, b"tail"]
    jobs = app.create_jobs([{"queue": "q", "action": "a", "params": params} for params in batch])
    expected = [{} if params is None else params for params in batch]
    assert [job.params for job in jobs] == expected
    assert [job.id for job in jobs] == sorted(job.id for job in jobs), "input order is FIFO order"
    _assert_round_trip(app, seen, jobs, expected)


def test_awaitable_enqueue_takes_bytes(app_factory):
    app, seen = _recording_app(app_factory)

    async def enqueue() -> list[ferroq.Job]:
        one = await app.acreate_job("q", "a", b"\x00async")
        return [one, *(await app.acreate_jobs([{"queue": "q", "action": "a", "params": bytearray(b"\xff")}]))]

    jobs = asyncio.run(enqueue())
    _assert_round_trip(app, seen, jobs, [b"\x00async", b"\xff"])


def test_json_params_are_unchanged(app_factory):
    app, seen = _recording_app(app_factory)
    batch = [{"to": "a@b.c", "n": [1, 2.5, None, True]}, ["x"], "a string", 42, 2.5, True, None, {"nul": "a\x01b"}]
    jobs = [app.create_job("q", "a", params) for params in batch]
    expected = [{} if params is None else params for params in batch]
    _assert_round_trip(app, seen, jobs, expected)
    with pytest.raises(ferroq.InvalidParamsError):
        app.create_job("q", "a", {"blob": b"bytes inside JSON are not JSON"})
    with pytest.raises(ferroq.InvalidParamsError):
        app.create_job("q", "a", "JSON text cannot hold \x00")
    assert len(app.list_jobs()) == len(batch)


def test_transitions_and_test_helpers_give_bytes_back(app_factory):
    app, _ = _recording_app(app_factory)
    job = app.create_job("q", "a", b"\x00cancel me", delay=3600)
    assert app.cancel_job(job.id).params == b"\x00cancel me"
    assert app.retry_job(job.id).params == b"\x00cancel me"
    assert assert_job_created(app, "q", "a", b"\x00cancel me").id == job.id


def test_search_reads_json_params_only(app_factory):
    app, _ = _recording_app(app_factory)
    json_job = app.create_job("q", "a", {"note": "null and void"})
    app.create_job("q", "a", b"null and void")
    assert [job.id for job in app.list_jobs(search="null")] == [json_job.id]
    assert [job.id for job in app.list_jobs(search="void")] == [json_job.id]
    assert app.paginate_jobs(10, 1, search="null").total == 1
    assert len(app.list_jobs(search="a")) == 2, "the action is still searched"


def test_bytes_over_the_params_limit_are_refused_before_anything_is_written(app_factory, db):
    app, seen = _recording_app(app_factory, max_params_size=100)
    with pytest.raises(ferroq.ParamsTooLargeError, match="101 bytes"):
        app.create_job("q", "a", b"\x00" * 101)
    with pytest.raises(ferroq.ParamsTooLargeError):
        app.create_jobs(
            [{"queue": "q", "action": "a", "params": b"ok"}, {"queue": "q", "action": "a", "params": bytearray(101)}]
        )
    assert count_jobs(db) == 0
    job = app.create_job("q", "a", b"\xff" * 100)
    _assert_round_trip(app, seen, [job], [b"\xff" * 100])


def test_the_default_limit_counts_bytes(app_factory, db):
    app, seen = _recording_app(app_factory)
    limit = 1024 * 1024
    with pytest.raises(ferroq.ParamsTooLargeError):
        app.create_job("q", "a", bytes(limit + 1))
    assert count_jobs(db) == 0
    big = bytes(range(256)) * (limit // 256)
    job = app.create_job("q", "a", big)
    _assert_round_trip(app, seen, [job], [big])


# --- the caller's transaction ----------------------------------------------------------------

#: What each driver enqueues on its connection: one create_job, then a mixed create_jobs.
CALLER_FIRST = EVERY_BYTE
CALLER_BATCH = [{"n": 1}, b"", b"\x00\xc3(\xff", "text", bytearray(b"\x01")]


def _caller_enqueue(driver: Driver, app: ferroq.App, url: str) -> list[ferroq.Job]:
    """Enqueue CALLER_FIRST and CALLER_BATCH in one committed transaction of ``driver``."""
    specs = [{"queue": "q", "action": "a", "params": params} for params in CALLER_BATCH]
    if driver.is_async:

        async def run() -> list[ferroq.Job]:
            async with driver.transaction(url) as tx:
                first = await app.acreate_job("q", "a", CALLER_FIRST, connection=tx.conn)
                return [first, *(await app.acreate_jobs(specs, connection=tx.conn))]

        return asyncio.run(run())
    with driver.transaction(url) as tx:
        first = app.create_job("q", "a", CALLER_FIRST, connection=tx.conn)
        return [first, *app.create_jobs(specs, connection=tx.conn)]


def test_every_callers_connection_takes_bytes(app_factory, database_url, backend):
    drivers = [driver for driver in DRIVERS if backend in driver.backends]
    assert {"psycopg", "sqlite3"} & {driver.name for driver in drivers}
    expected = [CALLER_FIRST, *(bytes(p) if isinstance(p, bytearray) else p for p in CALLER_BATCH)]
    for driver in drivers:
        app, seen = _recording_app(app_factory)
        jobs = _caller_enqueue(driver, app, database_url)
        assert [job.params for job in jobs] == expected, f"{driver}: the rows decode into the params given"
        _assert_round_trip(app, seen, jobs, expected)


def test_bytes_over_the_limit_on_a_callers_connection_write_nothing(app_factory, database_url, backend, db):
    app, _ = _recording_app(app_factory, max_params_size=10)
    driver = next(d for d in DRIVERS if d.name == ("psycopg" if backend == "postgres" else "sqlite3"))
    with pytest.raises(ferroq.ParamsTooLargeError), driver.transaction(database_url) as tx:
        app.create_jobs(
            [{"queue": "q", "action": "a", "params": b"fits"}, {"queue": "q", "action": "a", "params": bytes(11)}],
            connection=tx.conn,
        )
    assert count_jobs(db) == 0
