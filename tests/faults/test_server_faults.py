"""The PostgreSQL server fails under running workers: crashes, restarts, killed backends, an
outage of 20 s, a server down when the worker starts, enqueues through restarts, and many
worker processes on one server. Each runs on a throwaway cluster (``cluster``); the ledger
stays on the shared server, out of the fault's way.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import psycopg
import pytest
from helpers.faults import finished_count, judge, timed, wait_for_finished

import ferroq

pytestmark = [pytest.mark.only_on("postgres")]

#: Options of the worker processes: short leases and deadlines so recovery is quick to see.
WORKER_ENV = {
    "TEST_CONCURRENCY": 10,
    "TEST_LEASE_TTL": 6,
    "TEST_STOP_TIMEOUT": 5,
    "TEST_CONNECT_TIMEOUT": 2,
    "TEST_STATEMENT_TIMEOUT": 2,
}


def _enqueue(app, count: int, queues: int, sleep: float = 0.0) -> list[int]:
    jobs = [{"queue": f"q{i % queues}", "action": "record", "params": {"sleep": sleep}} for i in range(count)]
    ids: list[int] = []
    for start in range(0, count, 1000):
        ids.extend(job.id for job in app.create_jobs(jobs[start : start + 1000]))
    return ids


def _start_workers(processes, cluster, database_url, count: int, **env):
    return [
        processes.worker("apps.ledger_app:app", cluster.url, TEST_LEDGER_URL=database_url, **{**WORKER_ENV, **env})
        for _ in range(count)
    ]


def _drain_under_way(cluster, database_url, ledger, processes, app_factory, done: int):
    """3,000 jobs in 50 blocking queues, two worker processes at them, ``done`` finished."""
    app = app_factory(url=cluster.url)
    ids = _enqueue(app, 3000, queues=50)
    _start_workers(processes, cluster, database_url, 2)
    wait_for_finished(ledger, done, timeout=60, describe=processes.describe)
    return app, ids


@pytest.mark.timeout(240)
def test_a_crash_restart_mid_drain_loses_nothing_and_recovers_at_once(
    backend, cluster, database_url, ledger, processes, app_factory, fault_report
):
    app, ids = _drain_under_way(cluster, database_url, ledger, processes, app_factory, done=600)
    cluster.restart("immediate")
    back = datetime.now(timezone.utc)
    wait_for_finished(ledger, len(ids), timeout=120, describe=processes.describe)
    first_after = min((r["at"] for r in ledger.finishes() if r["at"] > back), default=None)
    recovery = None if first_after is None else (first_after - back).total_seconds()
    verdict = judge(ledger, app, ids)
    fault_report(**verdict.figures(), recovery_s=recovery)
    verdict.assert_clean()
    assert recovery is not None and recovery < 10, recovery


@pytest.mark.timeout(240)
def test_killed_backends_six_times_lose_nothing_and_stall_briefly(
    backend, cluster, database_url, ledger, processes, app_factory, fault_report
):
    app, ids = _drain_under_way(cluster, database_url, ledger, processes, app_factory, done=300)
    for _ in range(6):
        assert cluster.terminate_ferroq_connections() > 0
        time.sleep(0.7)
    wait_for_finished(ledger, len(ids), timeout=120, describe=processes.describe)
    finishes = [r["at"] for r in ledger.finishes()]
    longest_gap = max((b - a).total_seconds() for a, b in zip(finishes, finishes[1:], strict=False))
    verdict = judge(ledger, app, ids)
    fault_report(**verdict.figures(), recovery_s=longest_gap)
    verdict.assert_clean()
    assert longest_gap < 10, longest_gap


@pytest.mark.timeout(240)
def test_a_20_second_outage_fails_calls_quickly_and_the_worker_recovers_by_itself(
    backend, cluster, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory(url=cluster.url, connect_timeout=2, statement_timeout=2)
    before = _enqueue(app, 200, queues=10, sleep=0.05)
    _start_workers(processes, cluster, database_url, 1)
    wait_for_finished(ledger, 20, timeout=60, describe=processes.describe)
    cluster.stop("fast")
    down_at = time.monotonic()
    slowest_call, refused = 0.0, 0
    while time.monotonic() - down_at < 20:
        took, _, error = timed(lambda: app.create_job("q0", "record", {}))
        slowest_call = max(slowest_call, took)
        assert isinstance(error, ferroq.DatabaseError), error
        refused += 1
        time.sleep(0.5)
    cluster.start()
    back = time.monotonic()
    after = app.create_job("after", "record", {})
    wait_for_finished(ledger, len(before) + 1, timeout=60, describe=processes.describe)
    recovery = _finished_seconds_after(ledger, after.id, back)
    verdict = judge(ledger, app, [*before, after.id])
    fault_report(
        **verdict.figures(),
        hangs=int(slowest_call >= 2 + 1.5),
        recovery_s=recovery,
        slowest_refused_call_s=slowest_call,
    )
    verdict.assert_clean()
    assert refused > 10
    assert slowest_call < 2 + 1.5, f"a call took {slowest_call:.1f} s with connect_timeout=2"
    assert recovery < 10, recovery


def _finished_seconds_after(ledger, job_id: int, moment: float) -> float:
    """Seconds from the monotonic ``moment`` until ``job_id`` finished (measured now)."""
    finish = ledger.finishes(job_id)[-1]["at"]
    now_db = ledger.db.scalar(f"SELECT {ledger.db.now_sql}")
    elapsed_since_finish = (ledger.db.to_datetime(now_db) - finish).total_seconds()
    return (time.monotonic() - moment) - elapsed_since_finish


@pytest.mark.timeout(240)
def test_a_worker_started_while_the_server_is_down_works_once_it_is_up(
    backend, cluster, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory(url=cluster.url, connect_timeout=2, statement_timeout=2)
    cluster.stop("fast")
    _start_workers(processes, cluster, database_url, 1)
    took, _, error = timed(lambda: app.create_job("q", "record", {}))
    assert isinstance(error, ferroq.DatabaseError), error
    assert took < 2 + 1.5, took
    time.sleep(3)  # the worker meets the outage a few times
    cluster.start()
    back = time.monotonic()
    job = app.create_job("q", "record", {})
    wait_for_finished(ledger, 1, timeout=30, describe=processes.describe)
    recovery = _finished_seconds_after(ledger, job.id, back)
    verdict = judge(ledger, app, [job.id])
    fault_report(**verdict.figures(), hangs=int(took >= 2 + 1.5), recovery_s=recovery, refused_call_s=took)
    verdict.assert_clean()
    assert recovery < 10, recovery


@pytest.mark.timeout(240)
def test_enqueues_through_three_crash_restarts_never_lose_an_acknowledged_job(
    backend, cluster, app_factory, fault_report
):
    app = app_factory(url=cluster.url, connect_timeout=2, statement_timeout=2)
    bound = 2 * 2 + 1.5  # a lost connection, then a new one refused: two connect_timeouts
    acknowledged: list[int] = []
    failed: list[str] = []
    unexpected: list[BaseException] = []
    slow: list[float] = []
    slowest = [0.0]
    stop = threading.Event()

    def enqueue() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            took, job, error = timed(lambda n=n: app.create_job("q", "noop", {"n": n}))
            slowest[0] = max(slowest[0], took)
            if took >= bound:
                slow.append(took)
            if error is None:
                acknowledged.append(job.id)
            elif isinstance(error, ferroq.DatabaseError):
                failed.append(f"{n}")
            else:
                unexpected.append(error)

    writers = [threading.Thread(target=enqueue) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(3):
            time.sleep(1.5)
            cluster.restart("immediate")
        time.sleep(1.5)
    finally:
        stop.set()
        for writer in writers:
            writer.join(30)
    stored = {row[0] for row in cluster.execute("SELECT id FROM ferroq_jobs")}
    lost = [i for i in acknowledged if i not in stored]
    ambiguous = len(stored) - len(set(acknowledged) & stored)
    fault_report(
        jobs=len(acknowledged),
        lost=len(lost),
        failed_calls=len(failed),
        ambiguous_commits=ambiguous,
        slowest_call_s=slowest[0],
        same_job_overlaps=0,
        queue_overlaps=0,
        hangs=len(slow),
    )
    assert not unexpected, unexpected
    assert not lost, lost
    assert failed, "the restarts should have failed some calls"
    assert not slow, f"calls slower than {bound} s: {slow}"


@pytest.mark.timeout(240)
def test_twelve_worker_processes_share_the_server_without_exhausting_it(
    backend, cluster, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory(url=cluster.url)
    ids = _enqueue(app, 2000, queues=40)
    workers = _start_workers(processes, cluster, database_url, 12, TEST_CONCURRENCY=4)
    peak = 0
    deadline = time.monotonic() + 120
    while finished_count(ledger) < len(ids) and time.monotonic() < deadline:
        peak = max(peak, cluster.ferroq_connections())
        time.sleep(0.2)
    wait_for_finished(ledger, len(ids), timeout=30, describe=processes.describe)
    verdict = judge(ledger, app, ids)
    fault_report(**verdict.figures(), peak_connections=peak)
    verdict.assert_clean()
    # Each process: its pool (up to pool_size = 10) and one LISTEN connection.
    assert peak <= len(workers) * 11 + 2, peak
    logs = processes.describe()
    assert "too many clients" not in logs


@pytest.mark.timeout(120)
def test_a_claim_still_waiting_on_the_server_when_stop_gives_up_puts_its_jobs_back(
    backend, cluster, app_factory, fault_report
):
    """A claim blocked by a lock outlives stop()'s deadline: stop returns without it, and the
    jobs that claim gets once the lock goes are put back at once, attempts unused, rather than
    left leased to a worker that is gone."""
    app = app_factory(url=cluster.url, concurrency=4)

    @app.performer("record")
    def record(job):
        return None

    ids = [j.id for j in app.create_jobs([{"queue": f"q{i}", "action": "record"} for i in range(4)])]
    with psycopg.connect(cluster.url) as locker:
        locker.execute("LOCK TABLE ferroq_jobs IN ACCESS EXCLUSIVE MODE")
        app.start()
        time.sleep(1)  # the worker's first claim waits on the lock
        took, unstoppable, error = timed(lambda: app.stop(0.5))
        assert error is None and unstoppable == [], (error, unstoppable)
    # The lock is gone: the claim commits, and its jobs come straight back. Judged on the one
    # look that saw them all back: this worker has stopped, and what later looks could show
    # belongs to whatever claims next, not to this stop.
    deadline = time.monotonic() + 10
    while True:
        jobs = [app.get_job(i) for i in ids]
        if all(j.state == "available" for j in jobs):
            break
        assert time.monotonic() < deadline, [(j.state, j.attempts, j.attempted_by) for j in jobs]
        time.sleep(0.1)
    fault_report(jobs=len(ids), lost=0, same_job_overlaps=0, queue_overlaps=0, hangs=int(took >= 0.5 + 3), stop_s=took)
    assert took < 0.5 + 3, took
    assert [j.attempts for j in jobs] == [0] * len(ids), [(j.attempts, j.attempted_by, j.error) for j in jobs]
