"""Fixtures of the Python-level benchmarks: `pytest benches/ --benchmark-only`.

Every benchmark runs on both backends, each on a fresh database: a PostgreSQL schema at
$FERROQ_TEST_DATABASE_URL (default the local server) and a SQLite file in a temp dir.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

import ferroq

BASE_URL = os.environ.get("FERROQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.db'}"
        return
    schema = f"ferroq_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in BASE_URL else "?"
    try:
        yield f"{BASE_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def make_app(database_url):
    apps = []

    def make(**options):
        app = ferroq.App(database_url, **options)
        app.migrate()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
