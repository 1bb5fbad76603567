"""The database libraries ferroq runs statements on in the caller's own transaction, each
opened the way its users open a transaction (for ``tests/test_caller_transaction.py``).

Every driver gives a context manager over one transaction on a test's database: it yields a
:class:`Tx` (``conn``, the object passed to ferroq, and ``write(sql)``, a statement through the
library itself), commits when the block exits cleanly and rolls back when it raises — raise
:class:`Rollback` to roll back. Whatever it opened (connections, engines, Django aliases) is
closed when the block exits. Async drivers give an async context manager.

On PostgreSQL each test has its own schema, named in the URL's ``options=-csearch_path=...``;
every library here is given that search path in its own way, and the ``public`` schema holds
no ferroq tables, so a library that ignored it would fail rather than pass.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiosqlite
import asyncpg
import psycopg
from helpers import backend_of, sqlite_path
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session


class Rollback(Exception):
    """Raised inside a transaction block to roll the transaction back."""


@dataclass(frozen=True)
class Tx:
    """One open transaction: ``conn`` goes to ferroq, ``write`` runs SQL through the library."""

    conn: Any
    write: Callable[[str], Any]


@dataclass(frozen=True)
class Driver:
    """A library and the transaction its users open with it."""

    name: str
    backends: tuple[str, ...]
    is_async: bool
    #: ``transaction(database_url)``: a context manager (async if ``is_async``) yielding a Tx.
    transaction: Callable[[str], Any]

    def __str__(self) -> str:
        return self.name


# --- URLs ----------------------------------------------------------------------------------


def pg_schema(url: str) -> str:
    """The schema a test's PostgreSQL URL puts first on the search path."""
    options = parse_qs(urlsplit(url).query)["options"][0]
    prefix = "-csearch_path="
    assert options.startswith(prefix), options
    return options[len(prefix) :]


def pg_base(url: str) -> str:
    """The URL without its query string (no ``options``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _sqlalchemy_url(url: str, asynchronous: bool) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL and ``connect_args`` for a test's database."""
    if backend_of(url) == "sqlite":
        # ``sqlite:////abs/path`` is already SQLAlchemy's form of an absolute path.
        return (url.replace("sqlite://", "sqlite+aiosqlite://", 1) if asynchronous else url), {}
    rest = pg_base(url).split("://", 1)[1]
    if asynchronous:
        return f"postgresql+asyncpg://{rest}", {"server_settings": {"search_path": pg_schema(url)}}
    # psycopg takes libpq's ``options`` parameter.
    return f"postgresql+psycopg://{rest}", {"options": f"-csearch_path={pg_schema(url)}"}


# --- the drivers ---------------------------------------------------------------------------


@contextmanager
def _psycopg(url: str) -> Iterator[Tx]:
    # The connection's context manager commits on a clean exit, rolls back on an exception.
    with psycopg.connect(url) as conn:
        yield Tx(conn, conn.execute)


@asynccontextmanager
async def _psycopg_async(url: str) -> AsyncIterator[Tx]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        yield Tx(conn, conn.execute)


@contextmanager
def _sqlite3(url: str) -> Iterator[Tx]:
    # Python's default (legacy) transaction control: BEGIN before the first INSERT/UPDATE.
    conn = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        with conn:  # commits, or rolls back on an exception
            yield Tx(conn, conn.execute)
    finally:
        conn.close()


@asynccontextmanager
async def _asyncpg(url: str) -> AsyncIterator[Tx]:
    conn = await asyncpg.connect(pg_base(url), server_settings={"search_path": pg_schema(url)})
    try:
        async with conn.transaction():
            yield Tx(conn, conn.execute)
    finally:
        await conn.close()


@asynccontextmanager
async def _asyncpg_pool(url: str) -> AsyncIterator[Tx]:
    # Most asyncpg apps take connections from a pool: those are proxies, not Connections.
    pool = await asyncpg.create_pool(
        pg_base(url), server_settings={"search_path": pg_schema(url)}, min_size=1, max_size=1
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield Tx(conn, conn.execute)
    finally:
        await pool.close()


@asynccontextmanager
async def _aiosqlite(url: str) -> AsyncIterator[Tx]:
    async with aiosqlite.connect(sqlite_path(url), timeout=30) as conn:

        async def write(sql: str) -> None:
            async with conn.execute(sql):
                pass

        try:
            yield Tx(conn, write)
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


@contextmanager
def _sqlalchemy_connection(url: str) -> Iterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=False)
    engine = create_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            yield Tx(conn, lambda sql: conn.execute(text(sql)))
    finally:
        engine.dispose()


@contextmanager
def _sqlalchemy_session(url: str) -> Iterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=False)
    engine = create_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            yield Tx(session, lambda sql: session.execute(text(sql)))
    finally:
        engine.dispose()


@contextmanager
def _sqlalchemy_connection_autobegin(url: str) -> Iterator[Tx]:
    """SQLAlchemy 2's "commit as you go": no begin(); the first statement begins the
    transaction, ``commit()`` commits it and closing the connection rolls back the rest."""
    address, connect_args = _sqlalchemy_url(url, asynchronous=False)
    engine = create_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield Tx(conn, lambda sql: conn.execute(text(sql)))
            conn.commit()
    finally:
        engine.dispose()


@contextmanager
def _sqlalchemy_session_autobegin(url: str) -> Iterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=False)
    engine = create_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        with Session(engine) as session:
            yield Tx(session, lambda sql: session.execute(text(sql)))
            session.commit()
    finally:
        engine.dispose()


@asynccontextmanager
async def _sqlalchemy_async_connection(url: str) -> AsyncIterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=True)
    engine = create_async_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            yield Tx(conn, lambda sql: conn.execute(text(sql)))
    finally:
        await engine.dispose()


@asynccontextmanager
async def _sqlalchemy_async_session(url: str) -> AsyncIterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=True)
    engine = create_async_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        async with AsyncSession(engine) as session, session.begin():
            yield Tx(session, lambda sql: session.execute(text(sql)))
    finally:
        await engine.dispose()


@asynccontextmanager
async def _sqlalchemy_async_connection_autobegin(url: str) -> AsyncIterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=True)
    engine = create_async_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            yield Tx(conn, lambda sql: conn.execute(text(sql)))
            await conn.commit()
    finally:
        await engine.dispose()


@asynccontextmanager
async def _sqlalchemy_async_session_autobegin(url: str) -> AsyncIterator[Tx]:
    address, connect_args = _sqlalchemy_url(url, asynchronous=True)
    engine = create_async_engine(address, connect_args=connect_args, poolclass=NullPool)
    try:
        async with AsyncSession(engine) as session:
            yield Tx(session, lambda sql: session.execute(text(sql)))
            await session.commit()
    finally:
        await engine.dispose()


# Django: configured once per process with no databases; each transaction registers an alias
# of its own for the test's database and removes it afterwards.
_django_lock = threading.Lock()


def _django_settings(url: str) -> dict[str, Any]:
    if backend_of(url) == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path(url)}
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": {"options": f"-c search_path={pg_schema(url)}"},
    }


def _django_alias(url: str) -> str:
    import django
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS, connections

    with _django_lock:
        if not settings.configured:
            settings.configure(DATABASES={}, INSTALLED_APPS=[], USE_TZ=True)
            django.setup()
        alias = f"ferroq_{uuid.uuid4().hex[:12]}"
        # configure_settings fills the keys Django expects (ATOMIC_REQUESTS, TIME_ZONE, ...).
        connections.settings[alias] = connections.configure_settings({DEFAULT_DB_ALIAS: _django_settings(url)})[
            DEFAULT_DB_ALIAS
        ]
    return alias


@contextmanager
def _django(url: str) -> Iterator[Tx]:
    from django.db import connections, transaction
    from django.utils.connection import ConnectionProxy

    alias = _django_alias(url)
    # What ``django.db.connection`` is, for this alias instead of "default".
    connection = ConnectionProxy(connections, alias)

    def write(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    try:
        with transaction.atomic(using=alias):
            yield Tx(connection, write)
    finally:
        # Django's connections are per thread: close this thread's and forget the alias.
        connection.close()
        del connections[alias]
        with _django_lock:
            del connections.settings[alias]


DRIVERS = (
    Driver("psycopg", ("postgres",), False, _psycopg),
    Driver("psycopg_async", ("postgres",), True, _psycopg_async),
    Driver("sqlite3", ("sqlite",), False, _sqlite3),
    Driver("asyncpg", ("postgres",), True, _asyncpg),
    Driver("asyncpg_pool", ("postgres",), True, _asyncpg_pool),
    Driver("aiosqlite", ("sqlite",), True, _aiosqlite),
    Driver("sqlalchemy_connection", ("postgres", "sqlite"), False, _sqlalchemy_connection),
    Driver("sqlalchemy_session", ("postgres", "sqlite"), False, _sqlalchemy_session),
    Driver("sqlalchemy_async_connection", ("postgres", "sqlite"), True, _sqlalchemy_async_connection),
    Driver("sqlalchemy_async_session", ("postgres", "sqlite"), True, _sqlalchemy_async_session),
    Driver("sqlalchemy_connection_autobegin", ("postgres", "sqlite"), False, _sqlalchemy_connection_autobegin),
    Driver("sqlalchemy_session_autobegin", ("postgres", "sqlite"), False, _sqlalchemy_session_autobegin),
    Driver(
        "sqlalchemy_async_connection_autobegin", ("postgres", "sqlite"), True, _sqlalchemy_async_connection_autobegin
    ),
    Driver("sqlalchemy_async_session_autobegin", ("postgres", "sqlite"), True, _sqlalchemy_async_session_autobegin),
    Driver("django", ("postgres", "sqlite"), False, _django),
)
