"""Shared fixtures for the ferroq behaviour suite.

Every test runs once per storage backend through the ``backend`` fixture. Only PostgreSQL
exists today; SQLite is added later by appending one entry to ``BACKENDS`` and one branch to
``database_url``. Each test gets its own PostgreSQL schema, so tests can run in parallel
(``pytest -n 2``) without seeing each other's rows.
"""

from __future__ import annotations

import gc
import os
import sys
import uuid
import warnings
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

import ferroq

# Make ``helpers`` and ``apps`` importable whatever pytest import mode is configured.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from helpers import Ledger, ProcessGroup  # noqa: E402

#: Storage backends every behaviour test runs against.
BACKENDS = ["postgres"]

#: Base URL of the test database; each test adds its own ``search_path``.
BASE_URL = os.environ.get(
    "FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

#: Hard per-test limit when pytest-timeout is installed, so a hung engine fails one test
#: instead of the whole run.
PER_TEST_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PER_TEST_TIMEOUT))


def _with_search_path(base_url: str, schema: str) -> str:
    """``base_url`` plus ``options=-csearch_path=<schema>`` in its query string."""
    parts = urlsplit(base_url)
    option = "options=" + quote(f"-csearch_path={schema}", safe="-")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Name of the storage backend under test."""
    return request.param


@pytest.fixture
def database_url(backend):
    """A database URL private to this test (its own PostgreSQL schema, dropped afterwards)."""
    if backend != "postgres":  # pragma: no cover - only postgres exists for now
        raise NotImplementedError(backend)
    schema = f"ferroq_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(BASE_URL, schema)
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as admin:
            # Workers of this test may still hold locks for a moment after being stopped.
            admin.execute("SET lock_timeout = '20s'")
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def db(database_url):
    """A raw autocommit psycopg connection to this test's schema, to inspect or alter rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app_factory(database_url):
    """Build ``ferroq.App`` objects on this test's database, migrated and stopped at teardown.

    ``app_factory(**kw)`` passes ``kw`` to ``ferroq.App``; ``url=`` overrides the database URL
    and ``migrate=False`` skips ``app.migrate()``. ``stop_timeout`` defaults to 5 s so that a
    stuck test cannot hold teardown for the product default of 30 s.
    """
    apps: list[ferroq.App] = []

    def make(url: str | None = None, *, migrate: bool = True, **kw) -> ferroq.App:
        kw.setdefault("stop_timeout", 5.0)
        app = ferroq.App(url or database_url, **kw)
        apps.append(app)
        if migrate:
            app.migrate()
        return app

    yield make
    for app in reversed(apps):
        try:
            app.close()
        except Exception as exc:  # e.g. an app the test never started; keep stopping the rest
            warnings.warn(f"app.close() at teardown raised {exc!r}")
    apps.clear()
    gc.collect()  # performers closing over their app form cycles; free their connections now


@pytest.fixture
def processes(tmp_path, database_url):
    """Subprocesses started by a test; any still alive at teardown are killed (by pid)."""
    group = ProcessGroup(tmp_path)
    yield group
    group.kill_all()


@pytest.fixture
def ledger(db):
    """A ``ledger`` table in this test's schema that the apps in ``tests/apps`` write to."""
    return Ledger.create(db)
