"""The network fails between ferroq and PostgreSQL: connections that go silent without closing
(every one, or only the LISTEN connection), and a server that refuses or never answers from
the start. ferroq talks to the throwaway cluster through ``proxy``, which injects the faults.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from helpers.faults import finished_count, judge, timed, wait_for_finished

import ferroq

pytestmark = [pytest.mark.only_on("postgres")]

STATEMENT_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
STOP_TIMEOUT = 5.0
#: What README promises on top of a stop's timeout.
STOP_MARGIN = 3.0


def _worker(processes, proxy, database_url, **env):
    settings = {
        "TEST_CONCURRENCY": 10,
        "TEST_LEASE_TTL": 6,
        "TEST_STOP_TIMEOUT": STOP_TIMEOUT,
        "TEST_CONNECT_TIMEOUT": CONNECT_TIMEOUT,
        "TEST_STATEMENT_TIMEOUT": STATEMENT_TIMEOUT,
        **env,
    }
    return processes.worker("apps.ledger_app:app", proxy.url, TEST_LEDGER_URL=database_url, **settings)


@pytest.mark.timeout(180)
def test_every_connection_going_silent_stalls_the_worker_only_briefly(
    backend, cluster, proxy, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory(url=cluster.url)
    ids = [j.id for j in app.create_jobs([{"queue": f"q{i % 10}", "action": "record"} for i in range(600)])]
    worker = _worker(processes, proxy, database_url)
    wait_for_finished(ledger, 100, timeout=60, describe=processes.describe)
    holed = proxy.black_hole()
    holed_at = time.monotonic()
    seen = finished_count(ledger)
    while finished_count(ledger) <= seen + 5:
        assert time.monotonic() - holed_at < 30, "the worker did not recover from silent connections"
        time.sleep(0.05)
    stall = time.monotonic() - holed_at
    wait_for_finished(ledger, len(ids), timeout=90, describe=processes.describe)
    # Black-hole again, then stop: the stop must not wait on the silent connections.
    proxy.black_hole()
    worker.send_signal(signal.SIGTERM)
    stop_took, _, _ = timed(lambda: worker.wait(60))
    verdict = judge(ledger, app, ids)
    fault_report(
        **verdict.figures(),
        hangs=int(stop_took >= STOP_TIMEOUT + STOP_MARGIN + 2),
        recovery_s=stall,
        stop_s=stop_took,
        connections_holed=holed,
    )
    verdict.assert_clean()
    assert holed >= 2
    # Found by statement_timeout, replaced within connect_timeout; jobs then flow again.
    assert stall < STATEMENT_TIMEOUT + CONNECT_TIMEOUT + 4, stall
    assert stop_took < STOP_TIMEOUT + STOP_MARGIN + 2, stop_took
    assert worker.returncode == 0, processes.output(worker)[-3000:]


@pytest.mark.timeout(120)
def test_a_silent_listen_connection_is_replaced_within_seconds(
    backend, cluster, proxy, database_url, ledger, processes, app_factory, fault_report
):
    app = app_factory(url=cluster.url)
    _worker(processes, proxy, database_url, TEST_POLL_INTERVAL=60)
    first = app.create_job("q", "record")
    wait_for_finished(ledger, 1, timeout=30, describe=processes.describe)
    assert proxy.black_hole(lambda c: c.is_listener) == 1
    time.sleep(0.5)
    job = app.create_job("q", "record")  # its NOTIFY is lost on the silent connection
    began = time.monotonic()
    wait_for_finished(ledger, 2, timeout=30, describe=processes.describe)
    pickup = time.monotonic() - began
    verdict = judge(ledger, app, [first.id, job.id])
    fault_report(**verdict.figures(), recovery_s=pickup)
    verdict.assert_clean()
    # Probed after 2 s without a notification, given up after 3 s more, then a fresh look.
    assert pickup < 8, pickup


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["refuses", "never answers"])
def test_every_call_has_a_deadline_when_the_server_cannot_be_reached(
    backend, server, cluster, proxy, app_factory, fault_report
):
    app = app_factory(url=cluster.url)  # the schema exists; only the way there fails
    proxy.new_connections = "refuse" if server == "refuses" else "silent"
    app = app_factory(
        url=proxy.url,
        migrate=False,
        connect_timeout=CONNECT_TIMEOUT,
        statement_timeout=STATEMENT_TIMEOUT,
        stop_timeout=1,
    )

    @app.performer("record")
    def record(job):
        return None

    bound = CONNECT_TIMEOUT + 1.5
    took = {}
    for name, call in {
        "create_job": lambda: app.create_job("q", "record"),
        "create_jobs": lambda: app.create_jobs([{"queue": "q", "action": "record"}]),
        "get_job": lambda: app.get_job(1),
        "list_jobs": lambda: app.list_jobs(),
        "paginate_jobs": lambda: app.paginate_jobs(),
        "migrate": app.migrate,
        "acreate_job": lambda: asyncio.run(app.acreate_job("q", "record")),
        "retry_job": lambda: app.retry_job(1),
        "cancel_job": lambda: app.cancel_job(1),
        "notify": app.notify,
        "drain": app.drain,
    }.items():
        took[name], _, error = timed(call)
        assert isinstance(error, ferroq.DatabaseError), (name, error)
    took["start"], _, error = timed(app.start)
    assert error is None, error
    time.sleep(1)
    took["stop"], unstoppable, error = timed(lambda: app.stop(1))
    assert error is None and unstoppable == [], (error, unstoppable)
    bounds = {name: bound for name in took} | {"start": 1.0, "stop": 1 + STOP_MARGIN}
    over = {name: round(took[name], 2) for name in took if took[name] >= bounds[name]}
    fault_report(
        jobs=0,
        lost=0,
        same_job_overlaps=0,
        queue_overlaps=0,
        hangs=len(over),
        slowest_call_s=max(took.values()),
    )
    assert not over, f"calls past their bound: {over}"


@pytest.mark.timeout(120)
def test_a_call_on_a_connection_that_goes_silent_fails_by_its_deadline_and_the_next_one_works(
    backend, cluster, proxy, app_factory, fault_report
):
    app_factory(url=cluster.url)  # the schema
    app = app_factory(
        url=proxy.url, migrate=False, connect_timeout=CONNECT_TIMEOUT, statement_timeout=STATEMENT_TIMEOUT
    )
    first = app.create_job("q", "record")
    assert proxy.black_hole() >= 1
    took = {}
    took["create_job"], _, error = timed(lambda: app.create_job("q", "record"))
    assert isinstance(error, ferroq.DatabaseError), error
    assert "statement_timeout" in str(error)
    # The silent connections were dropped: the next calls connect afresh and work.
    took["get_job"], again, error = timed(lambda: app.get_job(first.id))
    assert error is None, error
    assert again.id == first.id
    proxy.black_hole()
    took["acreate_job"], _, error = timed(lambda: asyncio.run(app.acreate_job("q", "record")))
    assert isinstance(error, ferroq.DatabaseError), error
    took["list_jobs"], listed, error = timed(lambda: app.list_jobs(queue="q"))
    assert error is None, error
    over = {name: t for name, t in took.items() if t >= STATEMENT_TIMEOUT + 1}
    fault_report(
        jobs=len(listed),
        lost=0,
        same_job_overlaps=0,
        queue_overlaps=0,
        hangs=len(over),
        slowest_call_s=max(took.values()),
    )
    assert not over, over
