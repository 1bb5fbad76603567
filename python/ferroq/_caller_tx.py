"""Statements on the caller's own connection: transactional enqueue and completion.

The core builds each statement (``_core.CallerStatement``); this module only runs it with the
caller's driver, inside whatever transaction the caller has open, and hands the rows back. A
driver is one :class:`_Driver` entry: how to recognise its connection, its placeholder style,
and how to execute and fetch. Wrappers (SQLAlchemy, Django) are unwrapped to the driver
connection underneath, which is in the wrapper's transaction.

Supported: psycopg 3 (``Connection``, ``AsyncConnection``), sqlite3, asyncpg (``Connection``, and
the connections its pools hand out),
aiosqlite, SQLAlchemy 2 (``Connection``, ``Session``, ``AsyncConnection``, ``AsyncSession``)
and Django's ``connection``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._core import CallerStatement
from .errors import ConfigurationError

__all__ = ["aexecute", "execute"]

Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True)
class _Driver:
    """How ferroq runs a statement on one kind of DB-API or asyncio connection."""

    name: str
    #: Module and class of the connection, looked up only if the module is already imported.
    module: str
    cls: str
    backend: str  # "postgres" or "sqlite"
    style: str  # "numbered" ($1 / ?1) or "format" (%s)
    run: Callable[[Any, str, tuple[Any, ...]], Rows] | None = None
    arun: Callable[[Any, str, tuple[Any, ...]], Awaitable[Rows]] | None = None


# The core reads rows by position, whatever row factory the caller's connection is set up with
# (psycopg's dict_row, sqlite3.Row, ...): each cursor here makes plain tuples.


def _run_psycopg(connection: Any, sql: str, params: tuple[Any, ...]) -> Rows:
    from psycopg.rows import tuple_row

    with connection.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(sql, params)
        rows: Rows = cursor.fetchall() if cursor.description is not None else []
        return rows


def _run_sqlite3(connection: Any, sql: str, params: tuple[Any, ...]) -> Rows:
    cursor = connection.cursor()
    try:
        cursor.row_factory = None
        cursor.execute(sql, params)
        rows: Rows = cursor.fetchall()
        return rows
    finally:
        cursor.close()


async def _arun_psycopg(connection: Any, sql: str, params: tuple[Any, ...]) -> Rows:
    from psycopg.rows import tuple_row

    async with connection.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(sql, params)
        rows: Rows = await cursor.fetchall() if cursor.description is not None else []
        return rows


async def _arun_asyncpg(connection: Any, sql: str, params: tuple[Any, ...]) -> Rows:
    rows: Rows = await connection.fetch(sql, *params)
    return rows


async def _arun_aiosqlite(connection: Any, sql: str, params: tuple[Any, ...]) -> Rows:
    cursor = await connection.execute(sql, params)
    try:
        cursor.row_factory = None
        rows: Rows = list(await cursor.fetchall())
        return rows
    finally:
        await cursor.close()


_DRIVERS = (
    _Driver("psycopg", "psycopg", "Connection", "postgres", "format", run=_run_psycopg),
    _Driver("psycopg (async)", "psycopg", "AsyncConnection", "postgres", "format", arun=_arun_psycopg),
    _Driver("sqlite3", "sqlite3", "Connection", "sqlite", "numbered", run=_run_sqlite3),
    _Driver("asyncpg", "asyncpg", "Connection", "postgres", "numbered", arun=_arun_asyncpg),
    # What asyncpg pools hand out: not a Connection subclass, but it proxies fetch().
    _Driver("asyncpg (pool)", "asyncpg.pool", "PoolConnectionProxy", "postgres", "numbered", arun=_arun_asyncpg),
    _Driver("aiosqlite", "aiosqlite", "Connection", "sqlite", "numbered", arun=_arun_aiosqlite),
)

_SUPPORTED = (
    "psycopg 3 Connection/AsyncConnection, sqlite3.Connection, asyncpg.Connection (also from a pool), "
    "aiosqlite.Connection, "
    "SQLAlchemy 2 Connection/Session/AsyncConnection/AsyncSession, or Django's connection"
)


def _is(connection: Any, module: str, cls: str) -> bool:
    loaded = sys.modules.get(module)
    kind = getattr(loaded, cls, None) if loaded is not None else None
    return isinstance(kind, type) and isinstance(connection, kind)


def _driver(connection: Any) -> _Driver:
    for driver in _DRIVERS:
        if _is(connection, driver.module, driver.cls):
            return driver
    raise ConfigurationError(
        f"ferroq cannot run statements on a {type(connection).__module__}.{type(connection).__qualname__}: "
        f"pass a {_SUPPORTED}"
    )


_AWAITABLE_TWIN = "use the awaitable twin (acreate_job, acreate_jobs, job.acomplete)"


def _unwrap(connection: Any) -> Any:
    """The driver connection under a SQLAlchemy or Django wrapper (sync)."""
    if _is(connection, "sqlalchemy.ext.asyncio", "AsyncSession") or _is(
        connection, "sqlalchemy.ext.asyncio", "AsyncConnection"
    ):
        raise ConfigurationError(f"a SQLAlchemy {type(connection).__name__} is asynchronous: {_AWAITABLE_TWIN}")
    if _is(connection, "sqlalchemy.orm", "Session"):
        connection = connection.connection()  # joins, or begins, the session's transaction
    if _is(connection, "sqlalchemy.engine", "Connection"):
        if not connection.in_transaction():
            # What SQLAlchemy's autobegin does on the connection's first statement: without
            # it, the caller's commit() would find no transaction and do nothing, and the
            # statement would be rolled back when the connection goes back to the pool.
            connection.begin()
        return connection.connection.driver_connection
    if _is(connection, "django.utils.connection", "ConnectionProxy") or _is(
        connection, "django.db.backends.base.base", "BaseDatabaseWrapper"
    ):
        connection.ensure_connection()
        return connection.connection
    return connection


async def _aunwrap(connection: Any) -> Any:
    """The driver connection under a SQLAlchemy asyncio wrapper."""
    if _is(connection, "sqlalchemy.ext.asyncio", "AsyncSession"):
        connection = await connection.connection()
    if _is(connection, "sqlalchemy.ext.asyncio", "AsyncConnection"):
        if not connection.in_transaction():
            await connection.begin()  # as SQLAlchemy's autobegin would (see _unwrap)
        raw = (await connection.get_raw_connection()).driver_connection
        if _is(raw, "asyncpg", "Connection") and not raw.is_in_transaction():
            # SQLAlchemy's asyncpg dialect sends BEGIN only before its own first statement
            # of a transaction: ferroq's, run on the asyncpg connection directly, would
            # commit at once and ignore the caller's rollback. A statement through SQLAlchemy
            # opens the transaction (unless the caller chose AUTOCOMMIT).
            await connection.exec_driver_sql("SELECT 1")
        return raw
    return _unwrap(connection)


def _prepare(driver: _Driver, statement: CallerStatement) -> tuple[str, tuple[Any, ...]]:
    if driver.backend != statement.backend:
        raise ConfigurationError(
            f"this App stores jobs in {statement.backend}, but the connection is a {driver.name} "
            f"connection to {driver.backend}: pass a connection to the App's own database"
        )
    return statement.render(driver.style)


def execute(connection: Any, statement: CallerStatement) -> Any:
    """Run ``statement`` on ``connection`` in its open transaction; what the rows mean."""
    raw = _unwrap(connection)
    driver = _driver(raw)
    if driver.run is None:
        raise ConfigurationError(f"a {driver.name} connection is asynchronous: {_AWAITABLE_TWIN}")
    sql, params = _prepare(driver, statement)
    return statement.result(list(driver.run(raw, sql, params)))


async def aexecute(connection: Any, statement: CallerStatement) -> Any:
    """Awaitable :func:`execute`; takes asynchronous and synchronous connections."""
    raw = await _aunwrap(connection)
    driver = _driver(raw)
    sql, params = _prepare(driver, statement)
    if driver.arun is not None:
        rows = await driver.arun(raw, sql, params)
    else:
        assert driver.run is not None
        rows = driver.run(raw, sql, params)
    return statement.result(list(rows))
