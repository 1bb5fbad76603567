"""A worker app whose performers log to the ledger.

Environment: ``FERROQ_DATABASE_URL`` (required), ``TEST_CONCURRENCY`` (4), ``TEST_LEASE_TTL``
(2 s), ``TEST_STOP_TIMEOUT`` (10 s), ``TEST_POLL_INTERVAL`` (60 s: tests must not rely on it),
``TEST_SLEEP_CAP`` (no cap: the most any performer here sleeps), ``TEST_CONNECT_TIMEOUT`` (5 s),
``TEST_STATEMENT_TIMEOUT`` (10 s), ``TEST_LEDGER_URL`` (the ledger's database, when it must
not be the one under test).
"""

from __future__ import annotations

import asyncio
import os
import time

import ferroq
from apps._ledger import record

app = ferroq.App(
    os.environ["FERROQ_DATABASE_URL"],
    concurrency=int(os.environ.get("TEST_CONCURRENCY", "4")),
    lease_ttl=float(os.environ.get("TEST_LEASE_TTL", "2")),
    stop_timeout=float(os.environ.get("TEST_STOP_TIMEOUT", "10")),
    poll_interval=float(os.environ.get("TEST_POLL_INTERVAL", "60")),
    connect_timeout=float(os.environ.get("TEST_CONNECT_TIMEOUT", "5")),
    statement_timeout=float(os.environ.get("TEST_STATEMENT_TIMEOUT", "10")),
)


SLEEP_CAP = float(os.environ.get("TEST_SLEEP_CAP", "inf"))


def _sleep_in_steps(total: float) -> None:
    """Sleep ``total`` seconds in short steps, so the engine can interrupt the thread."""
    total = min(total, SLEEP_CAP)
    end = time.monotonic() + total
    while time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


@app.performer("record")
def record_sync(job):
    """Log start, sleep ``params["sleep"]`` seconds (default 0), log finish."""
    record(job, "start")
    _sleep_in_steps(float((job.params or {}).get("sleep", 0)))
    record(job, "finish")
    return {"pid": os.getpid()}


@app.performer("record_async")
async def record_async(job):
    """Async twin of ``record``."""
    record(job, "start")
    await asyncio.sleep(min(SLEEP_CAP, float((job.params or {}).get("sleep", 0))))
    record(job, "finish")
    return {"pid": os.getpid()}


@app.performer("first_attempt_hangs")
def first_attempt_hangs(job):
    """The first attempt sleeps for a minute (to be killed); later attempts finish at once."""
    record(job, "start")
    if job.attempts == 1:
        _sleep_in_steps(60)
    record(job, "finish")
    return {"pid": os.getpid(), "attempt": job.attempts}


def _record_hook(job, error):
    """on_failure of ``hangs_with_hook``: one ledger row per hook run."""
    record(job, "hook")


@app.performer("hangs_with_hook", on_failure=_record_hook)
def hangs_with_hook(job):
    """Sleeps for a minute (to be killed); its on_failure hook logs to the ledger."""
    record(job, "start")
    _sleep_in_steps(60)
    record(job, "finish")


@app.performer("stuck_in_c")
def stuck_in_c(job):
    """Sleeps ``params["sleep"]`` seconds in one C call, where no interrupt reaches it."""
    record(job, "start")
    try:
        time.sleep(float(job.params["sleep"]))
    finally:
        record(job, "finish")  # when it really returned, interrupted or not
    return {"pid": os.getpid()}
