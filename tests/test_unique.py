"""Unique jobs: a job created with ``unique_key`` is the only one with that key while it is in
its unique states (by default until it finishes), whoever creates it; a duplicate returns the
existing job, marked ``duplicate``, and writes no row."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import timedelta

import pytest
from helpers import count_jobs, transaction_connection

import ferroq

#: Processes racing to create one key, and how many times each tries.
RACERS = 8
TRIES = 20


def test_a_duplicate_key_returns_the_existing_job_and_writes_no_row(app_factory, db):
    app = app_factory()
    first = app.create_job("q", "a", {"n": 1}, unique_key="order-7")
    assert first.duplicate is False
    assert first.unique_key == "order-7" and first.unique_period is None

    # The key alone decides: another queue, action and params get the existing job back.
    again = app.create_job("other", "b", {"n": 2}, unique_key="order-7")
    assert again.duplicate is True
    assert (again.id, again.queue, again.action, again.params) == (first.id, "q", "a", {"n": 1})
    assert "duplicate" in repr(again)
    assert count_jobs(db) == 1

    other = app.create_job("q", "a", {"n": 1}, unique_key="order-8")
    assert other.duplicate is False and other.id != first.id
    plain = app.create_job("q", "a", {"n": 1})
    assert plain.duplicate is False and plain.unique_key is None
    assert count_jobs(db) == 3
    listed = app.get_job(first.id)
    assert listed is not None and listed.unique_key == "order-7" and listed.duplicate is False


def test_a_finished_job_frees_its_key_unless_its_unique_states_hold_it(app_factory, db):
    app = app_factory()
    app.performer("a")(lambda job: None)
    free = app.create_job("q1", "a", unique_key="free")
    kept = app.create_job(
        "q2",
        "a",
        unique_key="kept",
        unique_states=["scheduled", "available", "running", "retryable", "completed"],
    )
    assert app.drain() == 2

    again = app.create_job("q1", "a", unique_key="free")
    assert again.duplicate is False and again.id != free.id, "a completed job no longer holds its key"
    still = app.create_job("q2", "a", unique_key="kept")
    assert still.duplicate is True and still.id == kept.id and still.state == "completed"
    assert count_jobs(db) == 3


def test_a_period_makes_the_key_unique_per_window_of_the_database_clock(app_factory, db):
    app = app_factory()
    first = app.create_job("q", "a", unique_key="tick", unique_period=1)
    assert first.unique_period == 1
    # Windows are whole periods since the epoch: a second later is always the next one.
    time.sleep(1.05)
    second = app.create_job("q", "a", unique_key="tick", unique_period=timedelta(seconds=1))
    assert second.duplicate is False and second.id != first.id

    # An hour's window: a repeat right away is a duplicate (unless the hour turned in between).
    hourly = app.create_job("q", "a", unique_key="tick", unique_period=3600)
    repeat = app.create_job("q", "a", unique_key="tick", unique_period=3600.0)
    assert repeat.id == hourly.id and repeat.duplicate or repeat.inserted_at.minute == 0
    # The same key without a period is another key.
    assert app.create_job("q", "a", unique_key="tick").duplicate is False


def test_create_jobs_resolves_repeats_in_the_batch_and_existing_keys_to_one_job_each(app_factory, db):
    app = app_factory()
    existing = app.create_job("q", "a", unique_key="old")
    jobs = app.create_jobs(
        [
            {"queue": "p", "action": "a", "params": {"i": 0}},
            {"queue": "q", "action": "a", "unique_key": "new"},
            {"queue": "q", "action": "a", "unique_key": "old"},
            {"queue": "p", "action": "a", "params": {"i": 1}},
            {"queue": "q", "action": "a", "unique_key": "new"},
        ]
    )
    assert [job.duplicate for job in jobs] == [False, False, True, False, True]
    assert jobs[2].id == existing.id
    assert jobs[4].id == jobs[1].id
    assert [jobs[0].params, jobs[3].params] == [{"i": 0}, {"i": 1}]
    assert jobs[0].id < jobs[3].id
    assert count_jobs(db) == 1 + 3


def test_a_blocking_queue_runs_unique_jobs_in_order(app_factory):
    app = app_factory()
    ran: list[int] = []
    app.performer("a")(lambda job: ran.append(job.params["i"]))
    app.create_jobs([{"queue": "q", "action": "a", "params": {"i": i}, "unique_key": f"k{i % 3}"} for i in range(6)])
    assert app.drain() == 3
    assert ran == [0, 1, 2]


def test_a_unique_job_in_the_callers_transaction(app_factory, database_url, db):
    app = app_factory()
    existing = app.create_job("q", "a", unique_key="taken")
    with transaction_connection(database_url) as conn:
        jobs = [
            app.create_job("q", "a", unique_key="taken", connection=conn),
            app.create_job("q", "a", unique_key="mine", connection=conn),
            *app.create_jobs(
                [{"queue": "q", "action": "a", "unique_key": "mine"}, {"queue": "q", "action": "a"}],
                connection=conn,
            ),
        ]
        assert [job.duplicate for job in jobs] == [True, False, True, False]
        assert jobs[0].id == existing.id and jobs[2].id == jobs[1].id
    assert count_jobs(db) == 3
    assert app.create_job("q", "a", unique_key="mine").id == jobs[1].id

    # Rolled back: nothing stays, and the key is free again.
    with transaction_connection(database_url) as conn:
        rolled = app.create_job("q", "a", unique_key="rolled", connection=conn)
        assert rolled.duplicate is False
        conn.rollback()
    assert count_jobs(db) == 3
    assert app.create_job("q", "a", unique_key="rolled").duplicate is False


def test_acreate_job_takes_the_unique_options(app_factory, db):
    app = app_factory()

    async def main() -> list[ferroq.Job]:
        first = await app.acreate_job("q", "a", unique_key="k", unique_period=60)
        again = await app.acreate_jobs([{"queue": "q", "action": "a", "unique_key": "k", "unique_period": 60}])
        return [first, *again]

    first, again = asyncio.run(main())
    assert again.duplicate and again.id == first.id
    assert count_jobs(db) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_key": ""}, "unique_key must not be empty"),
        ({"unique_key": "x" * 1025}, "over the limit"),
        ({"unique_key": 7}, "unique_key must be a string"),
        ({"unique_key": "k", "unique_period": 0}, "unique_period must be a whole number"),
        ({"unique_key": "k", "unique_period": -5}, "unique_period must be a whole number"),
        ({"unique_key": "k", "unique_period": 1.5}, "unique_period must be a whole number"),
        ({"unique_key": "k", "unique_states": ["available", "lost"]}, "unknown job state"),
        ({"unique_key": "k", "unique_states": "completed"}, "must be a list"),
        ({"unique_key": "k", "unique_states": ["completed"]}, "must include scheduled"),
        ({"unique_period": 60}, "need a unique_key"),
    ],
)
def test_bad_unique_options_raise_before_anything_is_written(app_factory, db, options, message):
    app = app_factory()
    with pytest.raises(ferroq.InvalidOptionError, match=message):
        app.create_job("q", "a", **options)
    with pytest.raises(ferroq.InvalidOptionError, match=message):
        app.create_jobs([{"queue": "q", "action": "a"}, {"queue": "q", "action": "a", **options}])
    assert count_jobs(db) == 0


def _race(url: str, barrier, results) -> None:
    """One racer: create the same unique job TRIES times as soon as every racer is ready."""
    app = ferroq.App(url)
    ids = []
    barrier.wait()
    for _ in range(TRIES):
        job = app.create_job("race", "a", {"from": multiprocessing.current_process().name}, unique_key="the-one")
        ids.append((job.id, job.duplicate))
    app.close()
    results.put(ids)


def test_processes_racing_to_create_one_key_make_exactly_one_job(app_factory, database_url, db):
    app_factory()  # the schema, before the racers start
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    racers = [context.Process(target=_race, args=(database_url, barrier, results)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    try:
        answers = [results.get(timeout=120) for _ in racers]
    finally:
        for racer in racers:
            racer.join(timeout=30)
    assert all(racer.exitcode == 0 for racer in racers)

    creations = [pair for answer in answers for pair in answer]
    inserted = [job_id for job_id, duplicate in creations if not duplicate]
    ids = {job_id for job_id, _ in creations}
    duplicates = len(creations) - len(inserted)
    print(f"{RACERS} processes x {TRIES} creations: {len(inserted)} inserted, {duplicates} duplicates")
    assert len(creations) == RACERS * TRIES
    assert len(inserted) == 1, creations
    assert ids == set(inserted), "every process got the one job's id"
    assert count_jobs(db) == 1


def test_retrying_a_failed_job_whose_key_a_newer_job_holds_is_refused(app_factory):
    app = app_factory()

    @app.performer("a")
    def fail(job: ferroq.Job) -> None:
        raise RuntimeError("no")

    failed = app.create_job("q", "a", unique_key="k", max_attempts=1)
    app.drain()
    assert app.get_job(failed.id).state == "failed"
    newer = app.create_job("q", "a", unique_key="k")
    assert newer.duplicate is False, "a failed job no longer holds its key (default states)"
    with pytest.raises(
        ferroq.JobStateError, match=f"job {failed.id} cannot be retried: another job with its unique key"
    ):
        app.retry_job(failed.id)
    assert app.get_job(failed.id).state == "failed"
    app.cancel_job(newer.id)
    assert app.retry_job(failed.id).state == "available"
