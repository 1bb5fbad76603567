"""Worker processes fail: killed mid-drain, frozen past their lease, stuck in a C call that no
interrupt reaches; SQLite writers and enqueuers killed again and again. On both backends.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import Ledger, RawDb, subprocess_env
from helpers.faults import judge, timed, wait_for_finished

LEASE_TTL = 3.0


def _ledger_writer(database_url: str):
    """A performer-side ledger writer for performers in this process."""

    def record(job, event: str) -> None:
        db = Ledger.connect(database_url)
        try:
            Ledger.record(db, job, event)
        finally:
            db.close()

    return record


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ending", ["stop", "close", "stop then close"])
def test_a_performer_stuck_in_a_c_call_keeps_its_job_through_stop(
    app_factory, database_url, ledger, processes, fault_report, ending
):
    """``stop()`` names the job it could not stop and keeps its lease; ``close()`` (which stops,
    then would close the pool), also after a ``stop()``, keeps the pool open for that lease."""
    record = _ledger_writer(database_url)
    app = app_factory(concurrency=2, lease_ttl=2, stop_timeout=1)

    @app.performer("stuck_in_c", timeout=1)
    def stuck_in_c(job):
        record(job, "start")
        try:
            time.sleep(float(job.params["sleep"]))  # one C call: no interrupt reaches it
        finally:
            record(job, "finish")  # when it really returned, interrupted or not
        return {"pid": os.getpid()}

    job = app.create_job("q", "stuck_in_c", {"sleep": 6})
    app.start()
    wait_for_finished_or_started = time.monotonic() + 20
    while not ledger.starts(job.id):
        assert time.monotonic() < wait_for_finished_or_started, "the job never started"
        time.sleep(0.05)
    # Another worker, ready to take the job the moment it is let go.
    other = processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=2, TEST_POLL_INTERVAL=0.5)
    time.sleep(1.5)  # past the job's timeout; the other worker is up
    if ending.startswith("stop"):
        took, unstoppable, error = timed(lambda: app.stop(1))
        assert unstoppable == [job.id]
        if ending == "stop then close":
            app.close()  # as after app.run(): the pool must stay open for the stuck job's lease
    else:
        took, _, error = timed(app.close)  # stop_timeout is 1 s
    assert error is None, error
    assert took < 1 + 3 + 0.5, took
    # The performer returns at 6 s and its attempt ends then (interrupted by the pending
    # timeout); only then may the other worker take the job.
    deadline = time.monotonic() + 30
    while not [r for r in ledger.starts(job.id) if r["pid"] == other.pid]:
        assert time.monotonic() < deadline, processes.describe()
        time.sleep(0.1)
    ours = ledger.finishes(job.id)[0]
    theirs = [r for r in ledger.starts(job.id) if r["pid"] == other.pid][0]
    handed_over = (theirs["at"] - ours["at"]).total_seconds()
    overlaps = ledger.same_job_overlaps()
    fault_report(
        jobs=1,
        lost=0,
        same_job_overlaps=len(overlaps),
        queue_overlaps=0,
        hangs=int(took >= 1 + 3 + 0.5),
        stop_s=took,
        recovery_s=handed_over,
    )
    assert ours["pid"] == os.getpid()
    assert handed_over > 0, "the other worker started the job while its performer still ran here"
    assert not overlaps, overlaps


@pytest.mark.timeout(180)
def test_a_killed_worker_loses_nothing_and_its_jobs_run_again_after_the_lease(
    database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory()
    ids = [
        j.id
        for j in app.create_jobs(
            [{"queue": f"q{i % 20}", "action": "record", "params": {"sleep": 0.3}} for i in range(300)]
        )
    ]
    env = {"TEST_LEASE_TTL": LEASE_TTL, "TEST_CONCURRENCY": 10}
    victim = processes.worker("apps.ledger_app:app", database_url, **env)
    survivor = processes.worker("apps.ledger_app:app", database_url, **env)

    def victim_mid_job() -> bool:
        """Both workers are at work, and the victim has a job in hand."""
        starts, finishes = ledger.starts(), ledger.finishes()
        done = {(r["job_id"], r["attempt"]) for r in finishes if r["pid"] == victim.pid}
        in_hand = [r for r in starts if r["pid"] == victim.pid and (r["job_id"], r["attempt"]) not in done]
        return bool(in_hand) and any(r["pid"] == survivor.pid for r in starts)

    deadline = time.monotonic() + 60
    while not victim_mid_job():
        assert time.monotonic() < deadline, processes.describe()
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    ledger.record_death(victim.pid)
    killed_at = ledger.rows("died")[-1]["at"]
    wait_for_finished(ledger, len(ids), timeout=120, describe=processes.describe)
    finished_by_victim = {(r["job_id"], r["attempt"]) for r in ledger.finishes() if r["pid"] == victim.pid}
    orphans = {
        r["job_id"]
        for r in ledger.starts()
        if r["pid"] == victim.pid and (r["job_id"], r["attempt"]) not in finished_by_victim
    }
    reruns = [min(r["at"] for r in ledger.starts(job_id) if r["pid"] != victim.pid) for job_id in orphans]
    recovery = max(((at - killed_at).total_seconds() for at in reruns), default=0.0)
    verdict = judge(ledger, app, ids)
    fault_report(**verdict.figures(), recovery_s=recovery, orphans=len(orphans))
    verdict.assert_clean()
    assert orphans, "the victim was killed with no job in hand"
    # A lease expires after lease_ttl; the rescuer looks every lease_ttl / 2.
    assert recovery < LEASE_TTL * 1.5 + 3, recovery


@pytest.mark.timeout(120)
def test_a_frozen_workers_late_outcome_is_refused(database_url, ledger, processes, app_factory, fault_report):
    app = app_factory()
    env = {"TEST_LEASE_TTL": 2, "TEST_POLL_INTERVAL": 0.5}
    frozen = processes.worker("apps.ledger_app:app", database_url, **env)
    job = app.create_job("q", "record", {"sleep": 4})
    deadline = time.monotonic() + 30
    while not ledger.starts(job.id):
        assert time.monotonic() < deadline, processes.describe()
        time.sleep(0.05)
    frozen.send_signal(signal.SIGSTOP)
    try:
        taker = processes.worker("apps.ledger_app:app", database_url, **env)
        deadline = time.monotonic() + 30
        while not any(r["pid"] == taker.pid for r in ledger.finishes(job.id)):
            assert time.monotonic() < deadline, processes.describe()
            time.sleep(0.1)
    finally:
        frozen.send_signal(signal.SIGCONT)
    # The frozen performer wakes up, finishes its sleep and reports: too late.
    deadline = time.monotonic() + 30
    while not any(r["pid"] == frozen.pid for r in ledger.finishes(job.id)):
        assert time.monotonic() < deadline, processes.describe()
        time.sleep(0.1)
    time.sleep(1)
    stored = app.get_job(job.id)
    stale_accepted = int(stored.result != {"pid": taker.pid})
    fault_report(
        jobs=1,
        lost=int(stored.state != "completed"),
        same_job_overlaps=0,  # a frozen process cannot be kept from running; its outcome is fenced
        queue_overlaps=0,
        stale_accepted=stale_accepted,
    )
    assert stored.state == "completed"
    assert stale_accepted == 0, stored.result


_ENQUEUER = r"""
import os, sys, ferroq
app = ferroq.App(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
n = 0
while True:
    n += 1
    job = app.create_job(f"q{n % 8}", "record", {"n": n})
    out.write(f"{job.id}\n")  # written only once the enqueue is acknowledged
"""


@pytest.mark.only_on("sqlite")
@pytest.mark.timeout(240)
def test_sqlite_writers_killed_again_and_again_lose_no_acknowledged_job(
    tmp_path, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory()
    acked = tmp_path / "acknowledged.txt"
    rng = random.Random(7)

    def spawn_enqueuer() -> subprocess.Popen:
        return processes.spawn(
            [sys.executable, "-c", _ENQUEUER, database_url, str(acked)], subprocess_env(), "enqueuer"
        )

    def spawn_worker() -> subprocess.Popen:
        return processes.worker("apps.ledger_app:app", database_url, TEST_LEASE_TTL=2, TEST_POLL_INTERVAL=1)

    workers = [spawn_worker() for _ in range(2)]
    enqueuers = [spawn_enqueuer() for _ in range(2)]
    kills = 0
    for _ in range(16):
        time.sleep(rng.uniform(0.3, 0.8))
        group = workers if rng.random() < 0.5 else enqueuers
        index = rng.randrange(len(group))
        group[index].send_signal(signal.SIGKILL)
        group[index].wait(10)
        ledger.record_death(group[index].pid)
        kills += 1
        group[index] = spawn_worker() if group is workers else spawn_enqueuer()
    for enqueuer in enqueuers:
        enqueuer.send_signal(signal.SIGKILL)
        enqueuer.wait(10)
    ids = {int(line) for line in acked.read_text().split()}
    deadline = time.monotonic() + 180
    while not ids <= ledger.finished_jobs():
        assert time.monotonic() < deadline, processes.describe()
        time.sleep(0.2)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    with RawDb.connect(database_url) as check:
        integrity = check.scalar("PRAGMA integrity_check")
    verdict = judge(ledger, app, ids)
    fault_report(**verdict.figures(), kills=kills, integrity=integrity)
    verdict.assert_clean()
    assert integrity == "ok"
    assert len(ids) > 100
