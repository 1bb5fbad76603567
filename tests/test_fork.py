"""Forking a process that already used ferroq (gunicorn --preload, Celery prefork,
multiprocessing's fork start method): the child works with the App it inherited and with new
ones, and the parent keeps working with its own connections."""

from __future__ import annotations

import multiprocessing
import os
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from helpers import FORK_WITH_THREADS_WARNING, run_in_fork, wait_for_job

import ferroq

# Forking while ferroq's threads run is what these tests check, so Python 3.12+'s warning
# about forking a multi-threaded process is expected here (see helpers/forking.py).
pytestmark = [
    pytest.mark.filterwarnings(FORK_WITH_THREADS_WARNING),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
]

#: Seen by forked children: multiprocessing's fork start method copies the parent's memory.
_INHERITED: dict[str, ferroq.App] = {}


def where(job: ferroq.Job) -> dict[str, int]:
    """A performer that says which process ran it."""
    return {"pid": os.getpid()}


def ran_in(app: ferroq.App, job_id: int) -> int:
    job = app.get_job(job_id)
    assert job is not None and job.state == "completed", job
    return job.result["pid"]


def with_application_name(url: str, name: str) -> str:
    """A PostgreSQL URL whose connections show ``name`` in pg_stat_activity."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("application_name", name)])
    return urlunsplit(parts._replace(query=query))


def enqueue_list_and_run(queue: str) -> tuple[int, int]:
    """What a forked child does with the App it inherited: enqueue, list, run."""
    app = _INHERITED["app"]
    job = app.create_job(queue, "where")
    assert [j.id for j in app.list_jobs(queue=queue)] == [job.id]
    app.drain()
    return job.id, os.getpid()


def test_a_forked_child_uses_the_inherited_app_and_new_ones_and_the_parent_carries_on(
    app_factory, database_url, backend, db
):
    url = with_application_name(database_url, "ferroq-fork-parent") if backend == "postgres" else database_url
    app = app_factory(url)
    app.performer(where)
    first = app.create_job("parent", "where")
    assert app.drain() == 1, "the parent has a runtime, pools and connections before the fork"
    parents_connections = set()
    if backend == "postgres":
        parents_connections = {
            row["pid"]
            for row in db.rows("SELECT pid FROM pg_stat_activity WHERE application_name = 'ferroq-fork-parent'")
        }
        assert parents_connections, "the parent's pool holds connections at the fork"

    def child() -> None:
        inherited = app.create_job("inherited", "where")
        assert app.get_job(inherited.id).state == "available"
        assert [j.id for j in app.list_jobs(queue="inherited")] == [inherited.id]
        assert app.drain() == 1
        assert ran_in(app, inherited.id) == os.getpid()

        fresh = ferroq.App(url)
        fresh.performer(where)
        made = fresh.create_job("fresh", "where")
        assert [j.id for j in fresh.list_jobs(queue="fresh")] == [made.id]
        assert fresh.drain() == 1
        with fresh:  # a background worker, started and stopped in the child
            started = fresh.create_job("fresh-worker", "where")
            wait_for_job(fresh, started.id, "completed", timeout=20)
        assert ran_in(fresh, started.id) == os.getpid()
        # Closing in the child closes only the child's connections.
        fresh.close()
        app.close()

    child_pid = run_in_fork(child)

    ran = {job.queue: job.result["pid"] for job in app.list_jobs(state="completed")}
    assert ran == {"parent": os.getpid(), "inherited": child_pid, "fresh": child_pid, "fresh-worker": child_pid}
    if backend == "postgres":
        still_open = {
            row["pid"]
            for row in db.rows("SELECT pid FROM pg_stat_activity WHERE application_name = 'ferroq-fork-parent'")
        }
        assert parents_connections <= still_open, "the child closed connections of the parent"
    after = app.create_job("parent", "where")
    assert app.drain() == 1
    assert ran_in(app, after.id) == os.getpid()
    assert ran_in(app, first.id) == os.getpid()


def test_multiprocessing_fork_process_and_pool_enqueue_list_and_run(app_factory):
    app = app_factory()
    app.performer(where)
    app.create_job("parent", "where")
    assert app.drain() == 1
    _INHERITED["app"] = app
    context = multiprocessing.get_context("fork")
    try:
        process = context.Process(target=enqueue_list_and_run, args=("process",))
        process.start()
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail("the forked multiprocessing.Process hung: killed after 60 s")
        assert process.exitcode == 0
        [job] = app.list_jobs(queue="process")
        assert job.state == "completed" and job.result["pid"] == process.pid

        with context.Pool(2) as pool:
            done = pool.map_async(enqueue_list_and_run, [f"pool-{n}" for n in range(4)]).get(timeout=60)
        pool_pids = {pid for _job_id, pid in done}
        assert os.getpid() not in pool_pids
        for job_id, _pid in done:
            # Either pool process may have run a job the other created.
            assert ran_in(app, job_id) in pool_pids
    finally:
        _INHERITED.clear()
    job = app.create_job("parent", "where")
    assert app.drain() == 1
    assert ran_in(app, job.id) == os.getpid()


def test_fork_while_the_parent_runs_a_worker(app_factory):
    app = app_factory()
    release = threading.Event()

    @app.performer("slow")
    def slow(job: ferroq.Job) -> dict[str, int]:
        assert release.wait(30), "never released"
        return {"pid": os.getpid()}

    app.performer(where)
    app.start()
    running = app.create_job("slow-queue", "slow")
    wait_for_job(app, running.id, "running")

    def child() -> None:
        assert not app.running, "the parent's worker does not run in the child"
        # An action the parent's worker does not serve, so only the child's worker can run it.
        app.performer("child_only")(where)
        app.start()
        job = app.create_job("child", "child_only")
        wait_for_job(app, job.id, "completed", timeout=20)
        assert ran_in(app, job.id) == os.getpid()
        assert app.get_job(running.id).state == "running", "the parent's job stays the parent's"
        app.stop()

    child_pid = run_in_fork(child)

    assert app.running
    release.set()
    assert wait_for_job(app, running.id, "completed").result == {"pid": os.getpid()}
    more = app.create_jobs([{"queue": f"after-{n}", "action": "where"} for n in range(5)])
    for job in more:
        wait_for_job(app, job.id, "completed")
        assert ran_in(app, job.id) == os.getpid()
    [child_job] = app.list_jobs(queue="child")
    assert child_job.result == {"pid": child_pid}
    app.stop()
    assert not app.running


def test_a_child_that_forks_again_works_too(app_factory):
    app = app_factory()
    app.performer(where)
    app.create_job("parent", "where")
    assert app.drain() == 1

    def grandchild() -> None:
        job = app.create_job("grandchild", "where")
        assert app.drain() == 1
        assert ran_in(app, job.id) == os.getpid()

    def child() -> None:
        job = app.create_job("child", "where")
        assert app.drain() == 1
        run_in_fork(grandchild)
        assert ran_in(app, job.id) == os.getpid(), "the child's own job, run before its fork"
        assert app.drain() == 0

    run_in_fork(child)
    assert {job.queue for job in app.list_jobs(state="completed")} == {"parent", "child", "grandchild"}
