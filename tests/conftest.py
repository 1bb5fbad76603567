"""Shared fixtures for the ferroq behaviour suite.

Every test that uses the database runs once per storage backend (``[postgres]`` and
``[sqlite]`` in its id) through the ``backend`` fixture. Each test gets its own database — a
PostgreSQL schema, or a SQLite file in its ``tmp_path`` — so tests can run in parallel
(``pytest -n 2``) without seeing each other's rows.

Markers:

* ``@pytest.mark.not_on("sqlite", reason="...")`` skips that backend's variant, visibly and with
  the reason, where a behaviour does not exist there (e.g. LISTEN/NOTIFY on SQLite);
* ``@pytest.mark.only_on("sqlite")`` runs a test on that backend only (no skipped variants).
"""

from __future__ import annotations

import os
import sys
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

import ferroq

# Make ``helpers`` and ``apps`` importable whatever pytest import mode is configured.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from helpers import Ledger, ProcessGroup, RawDb, close_apps  # noqa: E402 - needs TESTS_DIR on sys.path

#: Storage backends every behaviour test runs against.
BACKENDS = ["postgres", "sqlite"]

#: Base URL of the test database; each test adds its own ``search_path``.
BASE_URL = os.environ.get("FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: Hard per-test limit when pytest-timeout is installed, so a hung engine fails one test
#: instead of the whole run.
PER_TEST_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")
    config.addinivalue_line("markers", "not_on(backend, reason): skip this test's variant on that backend")
    config.addinivalue_line("markers", "only_on(*backends): run this test on these backends only")


def pytest_generate_tests(metafunc):
    """Parametrize ``backend`` (used directly or through ``database_url``) over BACKENDS,
    honouring the ``only_on`` and ``not_on`` markers."""
    if "backend" not in metafunc.fixturenames:
        return
    allowed = list(BACKENDS)
    for mark in metafunc.definition.iter_markers("only_on"):
        allowed = [b for b in allowed if b in mark.args]
    skipped = {}
    for mark in metafunc.definition.iter_markers("not_on"):
        reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
        assert reason, f"{metafunc.definition.nodeid}: not_on needs a reason"
        skipped.setdefault(mark.args[0], f"{mark.args[0]}: {reason}")
    metafunc.parametrize(
        "backend",
        [pytest.param(b, marks=[pytest.mark.skip(reason=skipped[b])] if b in skipped else []) for b in allowed],
    )


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


@pytest.fixture
def backend(request) -> str:
    """Name of the storage backend under test (parametrized by ``pytest_generate_tests``)."""
    return request.param


@pytest.fixture
def database_url(backend, tmp_path):
    """A database URL private to this test: its own PostgreSQL schema (dropped afterwards),
    or a fresh SQLite file in ``tmp_path`` (``sqlite:///`` + an absolute path, so four
    slashes)."""
    if backend == "sqlite":
        path = tmp_path / "jobs.db"
        assert path.is_absolute()
        yield f"sqlite:///{path}"
        return
    assert backend == "postgres", backend
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
    """A raw autocommit connection (``helpers.RawDb``) to this test's database, to inspect
    or alter rows the same way on both backends."""
    with RawDb.connect(database_url) as conn:
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
    close_apps(apps)


@pytest.fixture
def processes(tmp_path, database_url):
    """Subprocesses started by a test; any still alive at teardown are killed (by pid)."""
    group = ProcessGroup(tmp_path)
    yield group
    group.kill_all()


@pytest.fixture
def ledger(database_url):
    """A ``ledger`` table for this test (see ``helpers.ledger_url``) that the apps in
    ``tests/apps`` write to."""
    ledger = Ledger.create(database_url)
    yield ledger
    ledger.db.close()
