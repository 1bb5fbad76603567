"""Fuzzed input through every way in: a job is stored exactly as given, or refused with a
specific ``ferroq.FerroqError`` subclass and nothing is written.

Params are JSON-like trees (nested dicts and lists, keys and text with astral and odd code
points, integers far beyond 64 bits, floats such as ``-0.0``, ``1e16``, ``1e300``, ``5e-324``
and subnormals) or bytes. A stored job's params must come back *exactly*: the same types
(``1.0`` is not ``1``), the same float bits (``-0.0`` is not ``0.0``), the same key order, read
back from ``create_job``'s return value, ``get_job``, a performer (through a worker) and the
performer's result, which returns them. What JSON cannot hold (NaN, infinities, lone
surrogates) and what ferroq refuses (NUL) must raise ``InvalidParamsError``.

Job options (names, priority, attempts, delays, timeouts, times) are fuzzed with an oracle:
each bad option names the error it may raise; a call with no bad option must store every
option as given, and one with bad options must raise one of their errors, writing nothing (a
bulk call writes none of its jobs).

Ways in: ``create_job``, ``create_jobs`` and the caller's own transaction (psycopg and asyncpg
on PostgreSQL, sqlite3 and aiosqlite on SQLite), each on both backends. Examples are
derandomized and there is no example database, so a run is reproducible and writes nothing
to the tree.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from caller_drivers import DRIVERS
from helpers import count_jobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ferroq
from ferroq import InvalidNameError, InvalidOptionError, InvalidParamsError, InvalidScheduleError

#: Modest and reproducible: the whole file runs in seconds per backend. Each test reuses one
#: database across its examples and checks its own jobs by id and the row count by difference.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- params ---------------------------------------------------------------------------------

#: Floats whose text a lossy store changes: signed zero, integral values past 2**53 (jsonb's
#: numeric prints 1e16 as an integer), extremes, the smallest subnormal and other subnormals.
SPECIAL_FLOATS = [
    -0.0,
    0.0,
    1.0,
    -1.0,
    0.1,
    1e16,
    -1e16,
    2.0**53,
    2.0**53 + 2,
    1e300,
    -1e300,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    1e-310,
    5e-324,
    -5e-324,
]
#: Integers around the 64-bit edges and far past them.
SPECIAL_INTS = [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**300)]
#: Characters JSON encoders and decoders get wrong: astral, noncharacters, BOM, line and
#: paragraph separators, controls, a combining mark, quotes and backslashes, the private use
#: area's edges, and text that looks like a NUL escape without being one.
ODD_CHARS = '\U0001f600\U0010ffff\U00010000\ufffe\uffff\ufeff\u2028\u2029\x7f\x01\x1f\u0301"\\/\u00e9\ud7ff\ue000'
ODD_TEXT = ["", "\\u0000", "\\\\u0000", "u0000", "\\", '"', "null", "1e16", "-0.0"]

_chars = st.characters(codec="utf-8", exclude_characters="\x00") | st.sampled_from(list(ODD_CHARS))
texts = st.text(_chars, max_size=12) | st.sampled_from(ODD_TEXT)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(SPECIAL_FLOATS)
ints = st.integers(min_value=-(2**70), max_value=2**70) | st.integers() | st.sampled_from(SPECIAL_INTS)
#: Values JSON cannot hold or ferroq refuses: each must raise InvalidParamsError.
POISON = [float("nan"), float("inf"), float("-inf"), "a\x00b", "\x00", "lone \ud800 surrogate", "\udfff"]


def _sometimes_poison(valid: st.SearchStrategy, poison: st.SearchStrategy) -> st.SearchStrategy:
    """``valid``, and about one draw in thirty ``poison``, so most trees stay storable."""
    return st.integers(0, 29).flatmap(lambda n: poison if n == 0 else valid)


scalars = _sometimes_poison(st.none() | st.booleans() | ints | floats | texts, st.sampled_from(POISON))
keys = _sometimes_poison(texts, st.sampled_from(["k\x00", "\ud800"]))
json_trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
#: Params as callers pass them: JSON-like trees at any level (None means {}), or bytes.
params_values = json_trees | st.binary(max_size=64) | st.binary(max_size=16).map(bytearray)


def refused_params(value: Any) -> bool:
    """Whether ferroq must refuse ``value`` as params (InvalidParamsError)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(refused_params(item) for item in value)
    if isinstance(value, dict):
        return any(refused_params(k) or refused_params(v) for k, v in value.items())
    return False


def stored_form(params: Any) -> Any:
    """What ``job.params`` must be for ``params``: None is {}, bytes-like is bytes."""
    if params is None:
        return {}
    if isinstance(params, (bytearray, memoryview)):
        return bytes(params)
    return params


def same(a: Any, b: Any) -> bool:
    """Equality that sees what ``==`` forgives: types (1.0 vs 1, True vs 1), float bits
    (-0.0 vs 0.0) and key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def _app(app_factory) -> tuple[ferroq.App, dict[int, Any]]:
    """An App whose performer records each job's params and returns them as its result."""
    app = app_factory(poll_interval=60)
    seen: dict[int, Any] = {}

    @app.performer("a")
    def a(job: ferroq.Job) -> Any:
        seen[job.id] = job.params
        # A result is JSON: bytes params are recorded, not returned.
        return None if isinstance(job.params, bytes) else job.params

    return app, seen


def _caller_driver(backend: str, is_async: bool):
    name = {("postgres", False): "psycopg", ("postgres", True): "asyncpg"}.get((backend, is_async))
    name = name or ("aiosqlite" if is_async else "sqlite3")
    return next(driver for driver in DRIVERS if driver.name == name)


def enqueue(way: str, app: ferroq.App, url: str, backend: str, items: list[dict]) -> list[ferroq.Job]:
    """Enqueue ``items`` (create_job keyword arguments) one way; the caller's transaction
    commits only when every call in it succeeded."""
    if way == "create_job":
        assert len(items) == 1
        return [app.create_job(**items[0])]
    if way == "create_jobs":
        return app.create_jobs(items)
    driver = _caller_driver(backend, way == "caller_async")
    if driver.is_async:

        async def run() -> list[ferroq.Job]:
            async with driver.transaction(url) as tx:
                first = await app.acreate_job(**items[0], connection=tx.conn)
                return [first, *await app.acreate_jobs(items[1:], connection=tx.conn)]

        return asyncio.run(run())
    with driver.transaction(url) as tx:
        first = app.create_job(**items[0], connection=tx.conn)
        return [first, *app.create_jobs(items[1:], connection=tx.conn)]


WAYS = ["create_job", "create_jobs", "caller", "caller_async"]


@pytest.mark.parametrize("way", WAYS)
def test_params_are_stored_exactly_or_refused(app_factory, database_url, backend, db, way):
    app, seen = _app(app_factory)
    batch = st.lists(params_values, min_size=1, max_size=1 if way == "create_job" else 4)

    @FUZZ
    @given(batch)
    def check(values: list[Any]) -> None:
        before = count_jobs(db)
        items = [{"queue": "q", "action": "a", "params": value} for value in values]
        if any(refused_params(value) for value in values):
            with pytest.raises(InvalidParamsError):
                enqueue(way, app, database_url, backend, items)
            assert count_jobs(db) == before, "a refused call wrote jobs"
            return
        jobs = enqueue(way, app, database_url, backend, items)
        assert count_jobs(db) == before + len(values)
        expected = [stored_form(value) for value in values]
        assert all(same(job.params, want) for job, want in zip(jobs, expected, strict=True)), "returned job"
        stored = [app.get_job(job.id) for job in jobs]
        for job, want in zip(stored, expected, strict=True):
            assert job is not None and same(job.params, want), "get_job"
        assert app.drain() == len(jobs)
        assert all(same(seen[job.id], want) for job, want in zip(jobs, expected, strict=True)), "performer"
        finished = [app.get_job(job.id) for job in jobs]
        for job, want in zip(finished, expected, strict=True):
            assert job is not None and job.state == "completed"
            assert same(job.result, None if isinstance(want, bytes) else want), "result"

    check()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"f": [1e16, -0.0, 1e300, 5e-324, 1e-310, 1.0]}, id="floats"),
        pytest.param({"i": [2**63, -(2**100), 10**300]}, id="big-ints"),
        pytest.param({"z": 1, "a": 2, "\U0001f600": 3, "": 4}, id="key-order"),
        pytest.param({"s": "\\u0000", "t": "\\\\u0000"}, id="backslash-u0000-is-not-nul"),
        pytest.param(-0.0, id="top-level-minus-zero"),
        pytest.param(1e16, id="top-level-1e16"),
    ],
)
def test_known_lossy_values_round_trip(app_factory, backend, value):
    """The values a jsonb column changed (numbers through numeric, key order) and text that
    only looks like a NUL escape, pinned so they never depend on what the fuzzer draws."""
    app, seen = _app(app_factory)
    job = app.create_job("q", "a", value)
    stored = app.get_job(job.id)
    assert stored is not None and same(stored.params, value), stored.params if stored else None
    assert app.drain() == 1
    assert same(seen[job.id], value)
    done = app.get_job(job.id)
    assert done is not None and same(done.result, value)
    # Search reads the stored text: the escaped backslash before u0000 is there as written.
    found = [j.id for j in app.list_jobs(search="u0000")]
    assert found == ([job.id] if isinstance(value, dict) and "s" in value else [])


# --- options --------------------------------------------------------------------------------

#: The core's ranges: priority is a 32-bit integer, max_attempts 1..2**31-1, a delay at most
#: 100 years.
INT32 = range(-(2**31), 2**31)
MAX_DELAY = 100 * 365.25 * 86400
DEFAULTS = {"priority": 0, "max_attempts": 20, "timeout": 60.0, "max_backoff": 86400.0}

names = (
    st.text(_chars, min_size=1, max_size=8)
    | st.text(st.sampled_from(list(ODD_CHARS)), min_size=250, max_size=260)
    | st.sampled_from(["", "q\x00", "\ud800", "x" * 255, "\U0001f600" * 255, "\U0001f600" * 256])
    | st.sampled_from([None, 7, b"q"])
)
huge_ints = st.integers() | st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63) - 1, 2**100])
# Integers a float cannot hold (10**400) are left out: see test_seconds_beyond_a_float_are_refused.
seconds = (
    st.floats()
    | st.sampled_from([0, 0.0, -0.0, 5e-324, 1e-310, MAX_DELAY, MAX_DELAY * (1 + 2**-52), 1e300])
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.timedeltas()
)
not_numbers = st.sampled_from([True, "1", 1.5j, [1]])
aware = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(3000, 1, 1), timezones=st.timezones())


@st.composite
def job_options(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"queue": draw(names), "action": "a", "params": {"n": 1}}
    for name, values in [
        ("priority", huge_ints | not_numbers | st.sampled_from([1.0])),
        ("max_attempts", huge_ints | not_numbers),
        ("timeout", seconds | not_numbers),
        ("max_backoff", seconds | not_numbers),
        ("delay", seconds | not_numbers),
        ("scheduled_at", aware | st.datetimes(max_value=datetime(3000, 1, 1)) | not_numbers),
    ]:
        if draw(st.booleans()):
            item[name] = draw(values)
    return item


def _seconds(value: Any) -> float | None:
    """``value`` as float seconds, or None when it is no number of seconds at all."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def option_errors(item: dict[str, Any]) -> set[type]:
    """The errors ``item``'s bad options may raise (empty when every option is good)."""
    errors: set[type] = set()
    queue = item["queue"]
    if not isinstance(queue, str) or not 1 <= len(queue) <= 255 or "\x00" in queue:
        errors.add(InvalidNameError)
    elif any("\ud800" <= c <= "\udfff" for c in queue):
        errors.add(InvalidNameError)
    for name, low in [("priority", -(2**31)), ("max_attempts", 1)]:
        value = item.get(name)
        if value is not None and (type(value) is not int or not low <= value < 2**31):
            errors.add(InvalidOptionError)
    for name, positive in [("timeout", True), ("max_backoff", False)]:
        if name in item and item[name] is not None:
            s = _seconds(item[name])
            if s is None or not math.isfinite(s) or s < 0 or (positive and s == 0):
                errors.add(InvalidOptionError)
    if item.get("delay") is not None:
        s = _seconds(item["delay"])
        if s is None or not math.isfinite(s) or s < 0 or s > MAX_DELAY or item.get("scheduled_at") is not None:
            errors.add(InvalidScheduleError)
    at = item.get("scheduled_at")
    if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
        errors.add(InvalidScheduleError)
    return errors


def assert_stored_as_given(job: ferroq.Job, item: dict[str, Any]) -> None:
    assert job.queue == item["queue"]
    for name, default in DEFAULTS.items():
        given_value = item.get(name)
        want = default if given_value is None else given_value
        if name in ("timeout", "max_backoff"):
            want = _seconds(want)
        assert same(getattr(job, name), want) or getattr(job, name) == want, (name, getattr(job, name), want)
    if item.get("scheduled_at") is not None:
        assert job.scheduled_at == item["scheduled_at"]


@pytest.mark.parametrize("way", ["create_job", "create_jobs", "caller"])
def test_options_are_stored_as_given_or_refused(app_factory, database_url, backend, db, way):
    app, _ = _app(app_factory)
    batch = st.lists(job_options(), min_size=1, max_size=1 if way == "create_job" else 3)

    @FUZZ
    @given(batch)
    def check(items: list[dict[str, Any]]) -> None:
        before = count_jobs(db)
        errors = set().union(*(option_errors(item) for item in items))
        if errors:
            with pytest.raises(ferroq.FerroqError) as raised:
                enqueue(way, app, database_url, backend, items)
            assert type(raised.value) in errors, (type(raised.value), raised.value, errors)
            assert count_jobs(db) == before, "a refused call wrote jobs"
            return
        jobs = enqueue(way, app, database_url, backend, items)
        assert count_jobs(db) == before + len(items)
        for job, item in zip(jobs, items, strict=True):
            assert_stored_as_given(job, item)
            stored = app.get_job(job.id)
            assert stored is not None
            assert_stored_as_given(stored, item)

    check()


@pytest.mark.parametrize("option", ["delay", "timeout", "max_backoff"])
def test_seconds_beyond_a_float_are_refused(app_factory, db, backend, option):
    app = app_factory()
    with pytest.raises(InvalidScheduleError if option == "delay" else InvalidOptionError):
        app.create_job("q", "a", **{option: 10**400})
    assert count_jobs(db) == 0


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), id="year-1-east"),
        pytest.param(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), id="year-9999-west"),
    ],
)
def test_times_beyond_the_calendar_in_utc_are_refused(app_factory, db, backend, at):
    app = app_factory()
    with pytest.raises(InvalidScheduleError):
        app.create_job("q", "a", scheduled_at=at)
    assert count_jobs(db) == 0
