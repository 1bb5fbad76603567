"""Helpers for the behaviour suite, one module per concern: bounded waits (``waiting``), the
in-process run recorder (``recorder``), backend-neutral database access (``rawdb``), the SQL
ledger of worker processes (``ledger``), apps and subprocesses (``processes``), forked children
(``forking``)."""

from __future__ import annotations

from .forking import FORK_WITH_THREADS_WARNING, run_in_fork, wait_for_exit
from .ledger import Ledger, ledger_url
from .paths import TESTS_DIR
from .processes import ProcessGroup, close_apps, ferroq_cli, subprocess_env
from .rawdb import (
    RawDb,
    allow_job_updates,
    backend_of,
    count_jobs,
    db_now,
    execute_in,
    expire_lease,
    job_row,
    lease_is_live_sql,
    reject_job_updates,
    sqlite_path,
    transaction_connection,
)
from .recorder import Recorder
from .waiting import seconds, stays_true, wait_for_job, wait_for_jobs, wait_until

__all__ = [
    "FORK_WITH_THREADS_WARNING",
    "TESTS_DIR",
    "Ledger",
    "ProcessGroup",
    "RawDb",
    "Recorder",
    "allow_job_updates",
    "backend_of",
    "close_apps",
    "count_jobs",
    "db_now",
    "execute_in",
    "expire_lease",
    "ferroq_cli",
    "job_row",
    "lease_is_live_sql",
    "ledger_url",
    "reject_job_updates",
    "run_in_fork",
    "seconds",
    "sqlite_path",
    "stays_true",
    "subprocess_env",
    "transaction_connection",
    "wait_for_job",
    "wait_for_exit",
    "wait_for_jobs",
    "wait_until",
]
