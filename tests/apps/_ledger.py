"""Ledger writes for performers running in worker subprocesses.

Each row is its own autocommit statement, so every start is visible even if the process is
killed right after, and timestamps come from the database clock. Works on both backends
(``helpers.Ledger``): the test's PostgreSQL schema, or a SQLite file beside the jobs file.
"""

from __future__ import annotations

import os
import threading

from helpers import Ledger, RawDb

_local = threading.local()


def _connection() -> RawDb:
    db = getattr(_local, "db", None)
    if db is None:
        # Fault tests keep the ledger away from the server they break: TEST_LEDGER_URL.
        db = Ledger.connect(os.environ.get("TEST_LEDGER_URL") or os.environ["FERROQ_DATABASE_URL"])
        _local.db = db
    return db


def record(job, event: str) -> None:
    """Append ``(job, event)`` to the ledger."""
    Ledger.record(_connection(), job, event)
