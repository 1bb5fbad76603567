"""Ledger writes for performers running in worker subprocesses.

Each row is its own autocommit statement, so every start is visible even if the process is
killed right after, and timestamps come from the database clock.
"""

from __future__ import annotations

import os
import threading

import psycopg

_local = threading.local()


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["FERROQ_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


def record(job, event: str) -> None:
    """Append ``(job, event)`` to the ledger."""
    _connection().execute(
        "INSERT INTO ledger (job_id, queue, attempt, pid, event) VALUES (%s, %s, %s, %s, %s)",
        (job.id, job.queue, job.attempts, os.getpid(), event),
    )
