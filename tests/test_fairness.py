"""Fair claiming across queues, and concurrent queues made by pattern.

The measurement of the fairness rule: tenants A and C hold 2,000 jobs each in their own
queues, then tenant B gets 5. One worker must run B's five jobs within the first
``5 x (ready queues) x 2`` executions, whatever the queue names and however long A's and C's
backlogs, for blocking queues and for concurrent per-tenant queues, at concurrency 2 and 10.
Each run prints B's positions (``pytest -s`` shows them).
"""

from __future__ import annotations

import threading

import pytest
from helpers import wait_for_jobs, wait_until

import ferroq

BACKLOG = 2000
LATECOMER_JOBS = 5
READY_QUEUES = 3
WITHIN = LATECOMER_JOBS * READY_QUEUES * 2


def _positions_of_latecomer(app, queue_of, concurrency: int) -> list[int]:
    """Run the scenario on ``app`` and return B's 1-based positions in execution order."""
    order: list[int] = []
    lock = threading.Lock()

    @app.performer("work")
    async def work(job):
        with lock:
            order.append(job.id)

    # B's queue name sorts last and B's jobs are the newest: neither name nor FIFO favours it.
    for tenant in ("a", "c"):
        app.create_jobs([{"queue": queue_of(tenant), "action": "work"} for _ in range(BACKLOG)])
    latecomer = app.create_jobs([{"queue": queue_of("zz-b"), "action": "work"} for _ in range(LATECOMER_JOBS)])
    latecomer_ids = {job.id for job in latecomer}
    app.concurrency = concurrency
    with app:
        wait_until(lambda: latecomer_ids <= set(order), timeout=60, message="B's jobs to run")
    positions = [position for position, job_id in enumerate(order, start=1) if job_id in latecomer_ids]
    return positions


@pytest.mark.timeout(180)
@pytest.mark.parametrize("concurrency", [2, 10])
@pytest.mark.parametrize("kind", ["blocking", "concurrent"])
def test_a_small_tenant_is_not_starved_by_big_backlogs(app_factory, backend, kind, concurrency):
    if kind == "blocking":
        app = app_factory(poll_interval=60)
    else:
        # Per-tenant concurrent queues made by one pattern, each with its own limit.
        app = app_factory(poll_interval=60, queues={"tenant:*": 10})
    positions = _positions_of_latecomer(app, lambda tenant: f"tenant:{tenant}", concurrency)
    print(f"\n[{backend}, {kind} queues, concurrency {concurrency}] B ran at positions {positions} (bound {WITHIN})")
    assert len(positions) == LATECOMER_JOBS
    assert max(positions) <= WITHIN, f"B ran at {positions}, later than the first {WITHIN} executions"


def test_a_pattern_makes_queues_concurrent_each_with_its_own_limit(app_factory, db):
    app = app_factory(poll_interval=60, concurrency=20, queues={"shop:*": 3, "emails": 2})
    assert app.queues == {"shop:*": 3, "emails": 2}
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    release = threading.Event()
    lock = threading.Lock()

    @app.performer("work")
    def work(job):
        with lock:
            running[job.queue] = running.get(job.queue, 0) + 1
            peak[job.queue] = max(peak.get(job.queue, 0), running[job.queue])
        release.wait(10)
        with lock:
            running[job.queue] -= 1

    jobs = app.create_jobs(
        [{"queue": queue, "action": "work"} for queue in ("shop:1", "shop:2", "emails", "shop") for _ in range(6)]
    )
    rows = db.rows("SELECT DISTINCT queue, blocking FROM ferroq_jobs ORDER BY queue")
    assert {row["queue"]: bool(row["blocking"]) for row in rows} == {
        "emails": False,
        "shop": True,  # matches no key: blocking
        "shop:1": False,
        "shop:2": False,
    }
    with app:
        wait_until(lambda: running == {"shop:1": 3, "shop:2": 3, "emails": 2, "shop": 1}, timeout=10)
        release.set()
        wait_for_jobs(app, [job.id for job in jobs], "completed", timeout=20)
    assert peak == {"shop:1": 3, "shop:2": 3, "emails": 2, "shop": 1}


def test_a_worker_serves_only_its_queues(app_factory):
    enqueuer = app_factory()
    limited = app_factory(only_queues=["reports", "shop:*"], poll_interval=60)
    assert limited.only_queues == ["reports", "shop:*"]
    ran: list[str] = []

    @limited.performer("work")
    def work(job):
        ran.append(job.queue)

    queues = ["reports", "shop:1", "shop:2", "emails", "shopping"]
    jobs = {queue: enqueuer.create_job(queue, "work") for queue in queues}
    assert limited.drain() == 3
    assert sorted(ran) == ["reports", "shop:1", "shop:2"]
    for queue in ("emails", "shopping"):
        left = limited.get_job(jobs[queue].id)
        assert (left.state, left.attempts) == ("available", 0), "a queue the worker does not serve is left alone"

    limited.only_queues = None
    assert limited.drain() == 2


@pytest.mark.parametrize("bad", [[], "reports", [""], [3]])
def test_only_queues_is_checked_when_the_app_is_made(app_factory, bad):
    with pytest.raises(ferroq.ConfigurationError):
        app_factory(only_queues=bad)
