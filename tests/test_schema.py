"""Migrations: idempotent, safe with concurrent callers, and available from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest
from helpers import TESTS_DIR, ferroq_cli, subprocess_env, wait_for_job


def _tables(db) -> set[str]:
    return db.table_names()


def _versions(db) -> list:
    return [r[0] for r in db.execute("SELECT version FROM ferroq_schema_migrations ORDER BY version").fetchall()]


def test_migrate_creates_tables_and_is_idempotent(app_factory, db):
    app = app_factory()  # migrates once
    assert {"ferroq_jobs", "ferroq_schema_migrations"} <= _tables(db)
    versions = _versions(db)
    assert versions, "ferroq_schema_migrations records no version after migrate()"
    assert len(versions) == len(set(versions))

    job = app.create_job("q", "a", {"n": 1})
    app.migrate()
    app.migrate()

    assert _versions(db) == versions, "a repeated migrate() recorded versions again"
    again = app.get_job(job.id)
    assert again is not None and again.params == {"n": 1}, "migrate() lost existing jobs"


def test_two_processes_migrating_at_once_both_succeed(database_url, db):
    # Both children import ferroq first, then start migrating at the same wall-clock instant.
    script = textwrap.dedent(
        """
        import os, sys, time
        import ferroq
        app = ferroq.App(os.environ["FERROQ_DATABASE_URL"])
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        app.migrate()
        """
    )
    start_at = str(time.time() + 2.0)
    env = subprocess_env(database_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, start_at],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"concurrent migrate failed:\n{out}"

    assert {"ferroq_jobs", "ferroq_schema_migrations"} <= _tables(db)
    versions = _versions(db)
    assert versions and len(versions) == len(set(versions)), f"a migration version was recorded twice: {versions}"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cli_migrate(database_url, db, app_factory, how):
    if how == "flag":
        proc = ferroq_cli("migrate", "--database-url", database_url)
    else:  # FERROQ_DATABASE_URL is the default URL
        proc = ferroq_cli("migrate", database_url=database_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {"ferroq_jobs", "ferroq_schema_migrations"} <= _tables(db)
    versions = _versions(db)

    # Running it again is harmless and the schema is usable by an app that never migrated.
    proc = ferroq_cli("migrate", "--database-url", database_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _versions(db) == versions

    app = app_factory(migrate=False)

    @app.performer("a")
    def a(job):
        return "ok"

    job = app.create_job("q", "a")
    assert app.drain() == 1
    assert wait_for_job(app, job.id, "completed").result == "ok"


def test_console_script_ferroq_migrate(database_url, db):
    script = os.path.join(sysconfig.get_path("scripts"), "ferroq")
    assert os.path.exists(script), f"console script not installed at {script}"
    proc = subprocess.run(
        [script, "migrate", "--database-url", database_url],  # noqa: PLW1510
        env=subprocess_env(),
        cwd=str(TESTS_DIR),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ferroq_jobs" in _tables(db)


def test_cli_migrate_unreachable_database_fails_cleanly():
    started = time.monotonic()
    proc = ferroq_cli("migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/x", timeout=30)
    assert proc.returncode != 0
    assert time.monotonic() - started < 15
