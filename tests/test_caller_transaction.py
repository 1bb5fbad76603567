"""Enqueue and completion in the caller's own transaction, with every library ferroq claims.

For each library (``caller_drivers.DRIVERS``) on each backend it reaches, a test id names the
driver, the backend and whether the caller commits or rolls back: ``test_enqueue[...]`` creates
jobs on the caller's connection, ``test_complete[...]`` completes a running job on it from the
performer; both also write a row of the caller's own in the same transaction. ferroq's
statement comes first, so a library that opens its transaction lazily (SQLAlchemy's asyncpg
dialect, on its own first statement) cannot hide a write of ferroq's that ran outside it; and
``test_alone_in_the_transaction[...]`` runs ferroq's statement as the only one, which a wrapper
that learns of its transaction only from its own statements (SQLAlchemy's autobegin) must
still commit. The ``*_autobegin`` drivers are SQLAlchemy's "commit as you go", without begin().
Last, the connections ferroq refuses, before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid

import asyncpg
import psycopg
import pytest
from caller_drivers import DRIVERS, Driver, Rollback, pg_base, pg_schema
from helpers import count_jobs, sqlite_path
from sqlalchemy import NullPool
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import ferroq

BASE_URL = os.environ.get("FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _cases() -> list:
    return [
        pytest.param(driver, store, outcome, id=f"{driver.name}-{store}-{outcome}")
        for driver in DRIVERS
        for store in driver.backends
        for outcome in ("commit", "rollback")
    ]


CASES = _cases()


@pytest.fixture
def database_url(request, tmp_path):
    """This test's database, as conftest's ``database_url`` makes it, on the backend of its
    driver case (``store``) or else of its ``backend`` parameter. A driver case names its
    backend itself: through conftest's ``backend`` every driver would run on both."""
    params = request.node.callspec.params
    store = params["store"] if "store" in params else params["backend"]
    if store == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    schema = f"ferroq_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{BASE_URL}{'&' if '?' in BASE_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as admin:
            admin.execute("SET lock_timeout = '20s'")
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- enqueue -------------------------------------------------------------------------------

#: What each test enqueues: one create_job, then a create_jobs of two.
FIRST = {"queue": "q", "action": "a", "params": {"n": 1}}
BATCH = [
    {"queue": "q", "action": "a", "params": {"n": 2}},
    {"queue": "other", "action": "a", "params": {"n": 3, "text": "50% off"}, "priority": 5},
]


def _enqueue(driver: Driver, app: ferroq.App, url: str, commit: bool, jobs: list) -> None:
    """Enqueue FIRST and BATCH on ``driver``'s connection, write an order in the same
    transaction, then commit or roll back (the rollback raises Rollback)."""
    if driver.is_async:

        async def run() -> None:
            async with driver.transaction(url) as tx:
                jobs.append(await app.acreate_job(**FIRST, connection=tx.conn))
                jobs.extend(await app.acreate_jobs(BATCH, connection=tx.conn))
                await tx.write("INSERT INTO orders (id) VALUES (1)")
                if not commit:
                    raise Rollback

        asyncio.run(run())
    else:
        with driver.transaction(url) as tx:
            jobs.append(app.create_job(**FIRST, connection=tx.conn))
            jobs.extend(app.create_jobs(BATCH, connection=tx.conn))
            tx.write("INSERT INTO orders (id) VALUES (1)")
            if not commit:
                raise Rollback


@pytest.mark.parametrize(("driver", "store", "outcome"), CASES)
def test_enqueue(driver, store, outcome, app_factory, database_url, db):
    db.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("a")
    def a(job):
        ran.append(job.params["n"])

    jobs: list[ferroq.Job] = []
    if outcome == "rollback":
        with pytest.raises(Rollback):
            _enqueue(driver, app, database_url, False, jobs)
        assert len(jobs) == 3 and all(isinstance(job.id, int) for job in jobs)
        assert count_jobs(db) == 0
        assert app.list_jobs() == []
        assert [app.get_job(job.id) for job in jobs] == [None, None, None]
        assert db.scalar("SELECT count(*) FROM orders") == 0
        assert app.drain() == 0
        assert ran == []
        return

    _enqueue(driver, app, database_url, True, jobs)
    assert db.scalar("SELECT count(*) FROM orders") == 1
    assert count_jobs(db) == 3
    assert len({job.id for job in jobs}) == 3
    assert [(job.queue, job.action, job.params) for job in jobs] == [
        (spec["queue"], spec["action"], spec["params"]) for spec in [FIRST, *BATCH]
    ]
    assert [job.state for job in jobs] == ["available"] * 3
    assert [job.priority for job in jobs] == [0, 0, 5]
    assert [job.attempts for job in jobs] == [0, 0, 0]
    for job in jobs:
        stored = app.get_job(job.id)
        assert stored is not None
        got = (stored.id, stored.queue, stored.action, stored.params, stored.state, stored.priority)
        assert got == (job.id, job.queue, job.action, job.params, job.state, job.priority)
        assert (stored.scheduled_at, stored.inserted_at, stored.sequence) == (
            job.scheduled_at,
            job.inserted_at,
            job.sequence,
        )
        assert (stored.max_attempts, stored.timeout, stored.max_backoff) == (
            job.max_attempts,
            job.timeout,
            job.max_backoff,
        )
    assert [job.id for job in app.list_jobs()] == sorted(job.id for job in jobs)

    assert app.drain() == 3
    assert sorted(ran) == [1, 2, 3]
    assert [app.get_job(job.id).state for job in jobs] == ["completed"] * 3


# --- completion ----------------------------------------------------------------------------


@pytest.mark.parametrize(("driver", "store", "outcome"), CASES)
def test_complete(driver, store, outcome, app_factory, database_url, db):
    """The performer completes its job on the driver's connection, writes a ledger row in the
    same transaction, commits or rolls back, then returns normally. A committed completion is
    the job's one completion (the return writes nothing more); a rolled-back one undid the
    work, so the attempt fails, waits for its backoff like any failure, and the next attempt
    completes the job."""
    db.execute("CREATE TABLE ledger (job_id bigint, attempt integer)")
    app = app_factory(poll_interval=60)
    commit = outcome == "commit"
    seen: list = []

    def state_now(job_id):
        return db.scalar("SELECT state FROM ferroq_jobs WHERE id = %s", (job_id,))

    def roll_back(job) -> bool:
        return not commit and job.attempts == 1

    def ledger_row(job) -> str:
        return f"INSERT INTO ledger (job_id, attempt) VALUES ({job.id}, {job.attempts})"

    if driver.is_async:

        @app.performer("pay", backoff=lambda job: 60)
        async def pay(job):
            try:
                async with driver.transaction(database_url) as tx:
                    completed = await job.acomplete(tx.conn)
                    await tx.write(ledger_row(job))
                    seen.append((job.attempts, completed, state_now(job.id)))
                    if roll_back(job):
                        raise Rollback
            except Rollback:
                pass
            return {"returned": job.attempts}

    else:

        @app.performer("pay", backoff=lambda job: 60)
        def pay(job):
            try:
                with driver.transaction(database_url) as tx:
                    completed = job.complete(tx.conn)
                    tx.write(ledger_row(job))
                    seen.append((job.attempts, completed, state_now(job.id)))
                    if roll_back(job):
                        raise Rollback
            except Rollback:
                pass
            return {"returned": job.attempts}

    job = app.create_job("q", "pay")
    assert app.drain() == 1
    assert seen == [(1, True, "running")]
    done = app.get_job(job.id)
    assert done.attempts == 1
    if commit:
        # Completed once, by the caller's statement: the performer's return wrote nothing
        # (no result), and nothing is left to run.
        assert (done.state, done.error, done.result) == ("completed", None, None)
        assert done.done_at is not None
        assert db.execute("SELECT job_id, attempt FROM ledger").fetchall() == [(job.id, 1)]
        assert app.drain() == 0
        assert app.get_job(job.id).done_at == done.done_at
        return

    # The completion rolled back with the ledger row: not completed, whatever the performer
    # returned. The attempt failed, counts, and waits for its backoff (60 s).
    assert done.state == "retryable"
    assert done.error == (
        "job.complete(connection) was called but its transaction did not commit (rolled back or the connection failed)"
    )
    assert (done.done_at, done.result) == (None, None)
    assert (done.next_attempt_at - done.attempted_at).total_seconds() > 50
    assert db.scalar("SELECT count(*) FROM ledger") == 0
    assert app.drain() == 0, "the retry waits for its backoff"

    app.retry_job(job.id)
    assert app.drain() == 1
    assert seen == [(1, True, "running"), (2, True, "running")]
    done = app.get_job(job.id)
    assert (done.state, done.attempts, done.result) == ("completed", 2, None)
    assert db.execute("SELECT job_id, attempt FROM ledger").fetchall() == [(job.id, 2)]


# --- ferroq's statement alone in the transaction -----------------------------------------


@pytest.mark.parametrize(("driver", "store", "outcome"), CASES)
def test_alone_in_the_transaction(driver, store, outcome, app_factory, database_url, db):
    """Enqueue, then completion, as the only statement of the caller's transaction: a wrapper
    that learns of a transaction only from its own statements (SQLAlchemy's autobegin) must
    still commit it, or roll it back."""
    app = app_factory(poll_interval=60)
    commit = outcome == "commit"
    seen: list[bool] = []

    if driver.is_async:

        async def enqueue() -> None:
            async with driver.transaction(database_url) as tx:
                await app.acreate_job("q", "pay", {"alone": True}, connection=tx.conn)
                if not commit:
                    raise Rollback

        @app.performer("pay", backoff=lambda job: 60)
        async def pay(job):
            async with driver.transaction(database_url) as tx:
                seen.append(await job.acomplete(tx.conn))
                if not commit:
                    raise Rollback
            raise RuntimeError("after the transaction")

        if commit:
            asyncio.run(enqueue())
        else:
            with pytest.raises(Rollback):
                asyncio.run(enqueue())
    else:

        @app.performer("pay", backoff=lambda job: 60)
        def pay(job):
            with driver.transaction(database_url) as tx:
                seen.append(job.complete(tx.conn))
                if not commit:
                    raise Rollback
            raise RuntimeError("after the transaction")

        if commit:
            with driver.transaction(database_url) as tx:
                app.create_job("q", "pay", {"alone": True}, connection=tx.conn)
        else:
            with pytest.raises(Rollback), driver.transaction(database_url) as tx:
                app.create_job("q", "pay", {"alone": True}, connection=tx.conn)
                raise Rollback

    assert count_jobs(db) == (1 if commit else 0)
    if not commit:
        app.create_job("q", "pay")
    assert app.drain() == 1
    assert seen == [True]
    (job,) = app.list_jobs()
    assert (job.state, job.attempts) == (("completed", 1) if commit else ("retryable", 1))


# --- connections ferroq refuses --------------------------------------------------------------


def _refused(excinfo) -> str:
    return str(excinfo.value)


def test_unsupported_connection_is_refused_naming_the_drivers(backend, app_factory, db):
    app = app_factory(poll_interval=60)
    names = ("psycopg", "sqlite3", "asyncpg", "aiosqlite", "SQLAlchemy", "Django")
    errors = []
    with pytest.raises(ferroq.ConfigurationError) as excinfo:
        app.create_job("q", "a", connection=object())
    errors.append(_refused(excinfo))
    with pytest.raises(ferroq.ConfigurationError) as excinfo:
        app.create_jobs([{"queue": "q", "action": "a"}], connection=object())
    errors.append(_refused(excinfo))
    with pytest.raises(ferroq.ConfigurationError) as excinfo:
        asyncio.run(app.acreate_job("q", "a", connection=object()))
    errors.append(_refused(excinfo))
    assert count_jobs(db) == 0

    refused = []

    @app.performer("a")
    def a(job):
        with pytest.raises(ferroq.ConfigurationError) as excinfo:
            job.complete(object())
        refused.append(_refused(excinfo))

    job = app.create_job("q", "a")
    assert app.drain() == 1
    errors += refused
    assert len(errors) == 4
    for message in errors:
        assert "builtins.object" in message
        assert all(name in message for name in names), message
    # The refused completion changed nothing: the performer's return completed the job.
    assert app.get_job(job.id).state == "completed"


def test_connection_to_the_other_backend_is_refused(backend, app_factory, db, tmp_path):
    app = app_factory(poll_interval=60)
    if backend == "sqlite":
        with psycopg.connect(BASE_URL) as conn:
            with pytest.raises(ferroq.ConfigurationError, match="this App stores jobs in sqlite") as excinfo:
                app.create_job("q", "a", connection=conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # nothing ran

        async def via_asyncpg() -> None:
            conn = await asyncpg.connect(pg_base(BASE_URL))
            try:
                with pytest.raises(ferroq.ConfigurationError, match="this App stores jobs in sqlite"):
                    await app.acreate_job("q", "a", connection=conn)
            finally:
                await conn.close()

        asyncio.run(via_asyncpg())
    else:
        conn = sqlite3.connect(tmp_path / "other.db")
        try:
            with pytest.raises(ferroq.ConfigurationError, match="this App stores jobs in postgres") as excinfo:
                app.create_job("q", "a", connection=conn)
            assert not conn.in_transaction
        finally:
            conn.close()
    assert "pass a connection to the App's own database" in str(excinfo.value)
    assert count_jobs(db) == 0


async def _async_connections(backend: str, url: str):
    """(name, async connection, closer) for each async library on ``backend``."""
    opened = []
    if backend == "postgres":
        pg_conn = await psycopg.AsyncConnection.connect(url)
        opened.append(("psycopg_async", pg_conn, pg_conn.close))
        conn = await asyncpg.connect(pg_base(url), server_settings={"search_path": pg_schema(url)})
        opened.append(("asyncpg", conn, conn.close))
        address = "postgresql+asyncpg://" + pg_base(url).split("://", 1)[1]
        connect_args = {"server_settings": {"search_path": pg_schema(url)}}
    else:
        import aiosqlite

        conn = await aiosqlite.connect(sqlite_path(url))
        opened.append(("aiosqlite", conn, conn.close))
        address, connect_args = url.replace("sqlite://", "sqlite+aiosqlite://", 1), {}
    engine = create_async_engine(address, connect_args=connect_args, poolclass=NullPool)
    sa_conn = await engine.connect()
    opened.append(("sqlalchemy_async_connection", sa_conn, sa_conn.close))
    session = AsyncSession(engine)
    opened.append(("sqlalchemy_async_session", session, session.close))
    opened.append(("engine", None, engine.dispose))
    return opened


def test_sync_call_with_an_async_connection_points_to_the_awaitable_twin(backend, app_factory, database_url, db):
    app = app_factory(poll_interval=60)
    messages: dict[str, list[str]] = {}

    async def run() -> None:
        opened = await _async_connections(backend, database_url)
        try:
            for name, conn, _ in opened:
                if conn is None:
                    continue
                for call in (
                    lambda c: app.create_job("q", "a", connection=c),
                    lambda c: app.create_jobs([{"queue": "q", "action": "a"}], connection=c),
                ):
                    with pytest.raises(ferroq.ConfigurationError) as excinfo:
                        call(conn)
                    messages.setdefault(name, []).append(str(excinfo.value))
        finally:
            for _, _, close in reversed(opened):
                await close()

    asyncio.run(run())
    expected = {"postgres": 4, "sqlite": 3}[backend]
    assert len(messages) == expected, messages
    for name, texts in messages.items():
        for text in texts:
            assert "asynchronous" in text and "acreate_job" in text and "job.acomplete" in text, (name, text)
    assert count_jobs(db) == 0
