"""Leases: a dead worker's job comes back quickly, a stale attempt is fenced, and a long job
holding the GIL keeps its lease."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import (
    execute_in,
    expire_lease,
    job_row,
    stays_true,
    subprocess_env,
    transaction_connection,
    wait_for_job,
    wait_until,
)

LEASE_TTL = 2.0


def test_killed_workers_job_runs_again_after_lease_expiry(app_factory, database_url, ledger, processes):
    producer = app_factory()
    job = producer.create_job("q", "first_attempt_hangs")
    a = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=LEASE_TTL)
    wait_until(lambda: ledger.starts(job.id), timeout=20, message=processes.describe)
    b = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=LEASE_TTL)

    killed_at = time.monotonic()
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    done = wait_for_job(producer, job.id, "completed", timeout=20)
    recovery = time.monotonic() - killed_at

    starts = ledger.starts(job.id)
    assert [(s["attempt"], s["pid"]) for s in starts] == [(1, a.pid), (2, b.pid)], processes.describe()
    assert done.attempts == 2
    assert done.result == {"pid": b.pid, "attempt": 2}
    assert recovery < LEASE_TTL + 6, f"job came back {recovery:.1f}s after the kill"
    assert b.poll() is None, "the surviving worker exited"


def test_stale_attempt_cannot_complete_a_reclaimed_job(app_factory, database_url, db):
    db.execute("CREATE TABLE effects (job_id bigint, attempt int)")
    app = app_factory(lease_ttl=3, concurrency=4, poll_interval=60)
    started = {1: threading.Event(), 2: threading.Event()}
    release = {1: threading.Event(), 2: threading.Event()}
    completed: dict = {}
    interruptions: list = []

    @app.performer("fenced")
    def fenced(job):
        n = job.attempts
        started[n].set()
        while not release[n].is_set():
            try:
                release[n].wait(0.05)
            except BaseException as exc:  # noqa: BLE001 - an engine may interrupt a lost attempt
                interruptions.append(repr(exc))
        for _ in range(3):  # a stale worker tries to commit its effect regardless
            try:
                with transaction_connection(database_url) as conn:
                    execute_in(conn, "INSERT INTO effects VALUES (%s, %s)", (job.id, n))
                    ok = job.complete(conn)
                    if ok:
                        conn.commit()
                    else:
                        conn.rollback()
                completed[n] = ok
                break
            except BaseException as exc:  # noqa: BLE001 - recorded, the stale attempt retries
                interruptions.append(repr(exc))
        return {"attempt": n}

    job = app.create_job("q", "fenced")
    app.start()
    try:
        assert started[1].wait(10), "first attempt never started"

        # Force the lease to lapse (again and again, in case an extension races us) until
        # the job is claimed a second time.
        def expire():
            expire_lease(db, job.id, attempts=1)
            return started[2].is_set()

        wait_until(expire, timeout=20, interval=0.05, message="the job to be re-claimed")
        row = job_row(db, job.id)
        assert (row["state"], row["attempts"]) == ("running", 2)

        release[1].set()
        wait_until(
            lambda: 1 in completed,
            timeout=10,
            message=lambda: f"stale attempt to finish (interruptions: {interruptions})",
        )
        assert completed[1] is False, "the stale attempt completed a job it no longer owned"

        # The stale attempt returning does not end the job that attempt 2 is running.
        def state_and_attempts():
            row = job_row(db, job.id)
            return (row["state"], row["attempts"])

        assert stays_true(lambda: state_and_attempts() == ("running", 2), 1.0), job_row(db, job.id)
    finally:
        release[1].set()
        release[2].set()

    done = wait_for_job(app, job.id, "completed")
    assert completed[2] is True
    assert done.attempts == 2
    assert db.execute("SELECT job_id, attempt FROM effects").fetchall() == [(job.id, 2)]


def _gil_hog(duration: float) -> None:
    """Hold the GIL for ``duration`` seconds in one C call: ``ctypes.PyDLL`` functions run
    without releasing it, so no other Python thread runs meanwhile."""
    ctypes.PyDLL(None).usleep(int(duration * 1_000_000))


# Watches one job from another process (this one's threads may be frozen by the GIL hog):
# prints how many samples saw it running, and how many of those saw its lease already lapsed.
LEASE_SAMPLER = """
import sys, time
from helpers import RawDb, lease_is_live_sql
url, job_id, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
running = lapsed = 0
with RawDb.connect(url) as db:
    sql = f"SELECT state, {lease_is_live_sql(db)} FROM ferroq_jobs WHERE id = %s"
    while time.monotonic() < deadline:
        state, ok = db.execute(sql, (job_id,)).fetchone()
        if state == "running":
            running += 1
            lapsed += not ok
        elif state in ("completed", "failed", "discarded"):
            break
        time.sleep(0.05)
print(running, lapsed)
"""


@pytest.mark.parametrize("hog", ["python_loop", "c_call"])
def test_lease_is_extended_while_a_performer_holds_the_gil(app_factory, database_url, hog):
    ttl = 1.0
    duration = 3.5 * ttl
    # Two nodes: either would re-run the job if its lease lapsed.
    apps = [app_factory(lease_ttl=ttl, concurrency=2, poll_interval=60) for _ in range(2)]
    runs = []
    elapsed = []

    def perform(job):
        runs.append(job.attempts)
        t0 = time.monotonic()
        if hog == "c_call":
            _gil_hog(duration)
        else:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                pass
        elapsed.append(time.monotonic() - t0)
        return "done"

    for app in apps:
        app.performer("hog")(perform)
    job = apps[0].create_job("q", "hog")
    sampler = subprocess.Popen(
        [sys.executable, "-c", LEASE_SAMPLER, database_url, str(job.id), "30"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for app in apps:
            app.start()
        done = wait_for_job(apps[0], job.id, "completed", timeout=30)
        out = sampler.communicate(timeout=30)[0]
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait()
    assert elapsed and elapsed[0] >= 3 * ttl, f"the hog did not hold long enough: {elapsed}"
    assert runs == [1], f"the job ran {len(runs)} times: attempts {runs}"
    assert done.attempts == 1
    running, lapsed = map(int, out.split())
    assert running >= 10, f"the sampler hardly saw the job running: {out!r}"
    assert lapsed == 0, f"the lease had lapsed in {lapsed} of {running} samples"
