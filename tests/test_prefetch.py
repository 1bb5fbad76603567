"""Claiming ahead: a worker keeps up to ``prefetch`` claimed jobs beyond its running ones, so a
freed slot is refilled from memory while the next claim is under way.

What a user can see of it: a job claimed ahead is ``running`` (its lease held by the worker,
``attempted_by`` set) before its performer starts; never more performers run than
``concurrency``; ``stop()`` hands such jobs back at once, their attempts unused; one that waits
``reservation_timeout`` for a free slot goes back to the queue, where another worker can take
it; and neither a concurrent queue's limit nor a blocking queue's one-at-a-time rule is
stretched by it.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import stays_true, wait_for_jobs, wait_until

import ferroq
from ferroq import ConfigurationError


def _gated(app: ferroq.App, action: str = "work"):
    """Register a performer that blocks until the returned gate opens; returns the gate, the
    ids in start order and the highest number of performers seen running at once."""
    gate = threading.Event()
    started: list[int] = []
    running = [0, 0]  # now, most at once
    lock = threading.Lock()

    @app.performer(action)
    def work(job):
        with lock:
            started.append(job.id)
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            gate.wait(30)
        finally:
            with lock:
                running[0] -= 1

    return gate, started, running


def _idle_worker(app_factory, **options) -> tuple[ferroq.App, list[int]]:
    """A second App on the same database whose performer only records the ids it ran."""
    idle = app_factory(concurrency=1, poll_interval=0.2, **options)
    ran: list[int] = []

    @idle.performer("work")
    def work(job):
        ran.append(job.id)

    return idle, ran


def _states(app: ferroq.App, ids: list[int]) -> list[tuple[str, int]]:
    jobs = [app.get_job(job_id) for job_id in ids]
    return [(str(job.state), job.attempts) for job in jobs if job is not None]


def test_jobs_claimed_ahead_show_as_running_and_start_as_slots_free(app_factory):
    app = app_factory(concurrency=1, prefetch=2, queues={"q": 100}, poll_interval=60)
    gate, started, running = _gated(app)
    ids = [job.id for job in app.create_jobs([{"queue": "q", "action": "work"} for _ in range(3)])]
    with app:
        wait_until(lambda: started == ids[:1], message="the first job to start")
        # The other two are claimed ahead: leased by this worker, their performer not started.
        wait_until(lambda: _states(app, ids) == [("running", 1)] * 3, message="both jobs to be claimed ahead")
        assert all(app.get_job(job_id).attempted_by == app.worker_name for job_id in ids)
        assert stays_true(lambda: started == ids[:1], 0.3), "a job claimed ahead started past concurrency=1"
        gate.set()
        wait_for_jobs(app, ids, "completed")
    assert started == ids
    assert running[1] == 1
    assert [app.get_job(job_id).attempts for job_id in ids] == [1, 1, 1]


def test_stop_hands_jobs_claimed_ahead_back_at_once_with_their_attempts_unused(app_factory):
    app = app_factory(concurrency=1, prefetch=2, queues={"q": 100}, poll_interval=60)
    gate, started, _ = _gated(app)
    ids = [job.id for job in app.create_jobs([{"queue": "q", "action": "work"} for _ in range(3)])]
    app.start()
    wait_until(lambda: _states(app, ids) == [("running", 1)] * 3, message="two jobs to be claimed ahead")
    stopping = threading.Thread(target=app.stop, kwargs={"timeout": 20})
    stopping.start()
    try:
        # Back while the running job still runs: the stop does not wait for it to hand them back.
        wait_until(
            lambda: _states(app, ids[1:]) == [("available", 0)] * 2,
            timeout=5,
            message="the jobs claimed ahead to be handed back",
        )
        assert _states(app, ids[:1]) == [("running", 1)]
    finally:
        gate.set()
        stopping.join(30)
    assert started == ids[:1]
    assert _states(app, ids) == [("completed", 1), ("available", 0), ("available", 0)]


# prefetch 1: the buffer is full and the worker waits for room; prefetch 2: room is left and
# the worker naps until woken (poll_interval a minute away). Either way the reservation expires.
@pytest.mark.parametrize("prefetch", [1, 2])
def test_a_job_claimed_ahead_goes_back_after_the_reservation_timeout_for_another_worker(app_factory, prefetch):
    busy = app_factory(concurrency=1, prefetch=prefetch, reservation_timeout=0.3, queues={"q": 100}, poll_interval=60)
    gate, started, _ = _gated(busy)
    first, second = (job.id for job in busy.create_jobs([{"queue": "q", "action": "work"} for _ in range(2)]))
    idle, ran_elsewhere = _idle_worker(app_factory, prefetch=0, queues={"q": 100})
    try:
        with busy:
            wait_until(lambda: _states(busy, [first, second]) == [("running", 1)] * 2, message="the claim ahead")
            t0 = time.monotonic()
            with idle:
                # The busy worker's only slot stays taken; its reservation expires and the idle
                # worker runs the job, with one attempt: the handed-back one did not count.
                wait_for_jobs(idle, [second], "completed", timeout=10)
            assert time.monotonic() - t0 < 5
            assert ran_elsewhere == [second]
            assert busy.get_job(second).attempts == 1
            assert _states(busy, [first]) == [("running", 1)]
            gate.set()
            wait_for_jobs(busy, [first], "completed")
    finally:
        gate.set()
    assert started == [first]


def test_jobs_claimed_ahead_count_against_a_concurrent_queues_limit(app_factory):
    app = app_factory(concurrency=3, prefetch=3, queues={"limited": 1}, poll_interval=60)
    gate, started, running = _gated(app)
    ids = [job.id for job in app.create_jobs([{"queue": "limited", "action": "work"} for _ in range(3)])]
    with app:
        wait_until(lambda: started == ids[:1], message="the first job to start")
        # The queue runs one job at a time across all workers: nothing is claimed ahead in it.
        assert stays_true(lambda: _states(app, ids[1:]) == [("available", 0)] * 2, 0.5)
        gate.set()
        wait_for_jobs(app, ids, "completed")
    assert running[1] == 1


def test_a_blocking_queue_never_has_a_second_job_claimed_ahead(app_factory):
    app = app_factory(concurrency=2, prefetch=5, poll_interval=60)
    gate, started, _ = _gated(app)
    ids = [job.id for job in app.create_jobs([{"queue": "fifo", "action": "work"} for _ in range(3)])]
    with app:
        wait_until(lambda: started == ids[:1], message="the head to start")
        assert stays_true(lambda: _states(app, ids[1:]) == [("available", 0)] * 2, 0.5)
        gate.set()
        wait_for_jobs(app, ids, "completed")
    assert started == ids


def test_the_head_of_another_blocking_queue_is_left_for_a_worker_with_a_free_slot(app_factory):
    busy = app_factory(concurrency=1, prefetch=5, poll_interval=60)
    gate, started, _ = _gated(busy)
    first, other = (
        job.id for job in busy.create_jobs([{"queue": "a", "action": "work"}, {"queue": "b", "action": "work"}])
    )
    idle, ran_elsewhere = _idle_worker(app_factory)
    try:
        with busy:
            wait_until(lambda: started == [first], message="the busy worker's first job")
            # Claimed ahead, queue b's only job would wait behind queue a's in the busy worker.
            assert stays_true(lambda: _states(busy, [other]) == [("available", 0)], 0.5)
            with idle:
                wait_for_jobs(idle, [other], "completed")
            assert ran_elsewhere == [other]
    finally:
        gate.set()


def test_a_blocking_head_claimed_with_jobs_to_run_ahead_starts_first(app_factory):
    app = app_factory(concurrency=1, prefetch=3, queues={"c": 100}, poll_interval=60)
    gate, started, _ = _gated(app)
    # The concurrent jobs are older (lower ids) than the head, and the claim takes all four.
    ahead = [job.id for job in app.create_jobs([{"queue": "c", "action": "work"} for _ in range(3)])]
    head = app.create_job("b", "work").id
    with app:
        wait_until(lambda: started, message="a job to start")
        # The head holds its whole queue: it runs now, the concurrent jobs wait claimed ahead.
        assert started == [head]
        wait_until(lambda: _states(app, ahead) == [("running", 1)] * 3, message="the claim ahead")
        gate.set()
        wait_for_jobs(app, [head, *ahead], "completed")


def test_drain_counts_a_job_handed_back_from_the_buffer_once(app_factory):
    app = app_factory(concurrency=1, prefetch=1, reservation_timeout=0.2, queues={"q": 100})
    runs: list[int] = []

    @app.performer("work")
    def work(job):
        runs.append(job.id)
        time.sleep(0.8)

    ids = [job.id for job in app.create_jobs([{"queue": "q", "action": "work"} for _ in range(2)])]
    # The second job waits ahead longer than its reservation, goes back, and runs later.
    assert app.drain() == 2
    assert sorted(runs) == ids
    assert [app.get_job(job_id).attempts for job_id in ids] == [1, 1]


def test_prefetch_defaults_to_concurrency_up_to_a_hundred(app_factory):
    assert app_factory(concurrency=10).prefetch == 10
    assert app_factory(concurrency=1000).prefetch == 100
    assert app_factory(concurrency=10, prefetch=0).prefetch == 0
    assert app_factory().reservation_timeout == 2.0
    assert app_factory(reservation_timeout=0.5).reservation_timeout == 0.5


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("prefetch", -1, "prefetch must be 0 or more, got -1"),
        ("prefetch", 1.5, "prefetch"),
        ("prefetch", "many", "prefetch"),
        ("reservation_timeout", 0, "reservation_timeout must be a positive number of seconds"),
        ("reservation_timeout", -2, "reservation_timeout"),
        ("reservation_timeout", float("nan"), "reservation_timeout"),
        ("reservation_timeout", 1e19, "reservation_timeout must be at most 86400 seconds"),
    ],
)
def test_bad_claim_ahead_options_are_refused_when_the_app_is_made(database_url, option, value, message):
    with pytest.raises(ConfigurationError, match=message):
        ferroq.App(database_url, **{option: value})
