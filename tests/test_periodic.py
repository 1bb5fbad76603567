"""Periodic (cron) jobs: checked at registration, each tick enqueued exactly once by any number
of worker processes (no leader), and no replay of the ticks missed while no worker ran."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
from helpers import db_now, stays_true, wait_for_job, wait_until

import ferroq


def _tick_jobs(db, action: str = "tick") -> Counter:
    """How many jobs of ``action`` each tick (its scheduled_at) has, on the database."""
    rows = db.rows("SELECT scheduled_at FROM ferroq_jobs WHERE action = %s", (action,))
    return Counter(db.to_datetime(row["scheduled_at"]) for row in rows)


def _periodic_rows(db) -> int:
    return db.scalar("SELECT count(*) FROM ferroq_periodic")


@pytest.mark.parametrize(
    ("schedule", "zone", "reason"),
    [
        ("61 * * * *", None, "61"),
        ("* * * *", None, "* * * *"),
        ("every day", None, "every day"),
        ("@fortnightly", None, "@fortnightly"),
        ("0 0 30 2 *", None, "never matches"),
        ("*/5 * * * *", "Mars/Olympus", "Mars/Olympus"),
    ],
)
def test_a_bad_expression_or_time_zone_raises_at_registration(app_factory, db, schedule, zone, reason):
    app = app_factory()
    with pytest.raises(ferroq.ConfigurationError, match=reason.replace("*", r"\*")):
        app.periodic(schedule, action="report", timezone=zone)
    with pytest.raises(ferroq.ConfigurationError):

        @app.periodic(schedule, timezone=zone)
        def report(job):
            pass

    assert "report" not in repr(app), "a refused entry left its performer registered"
    assert app.periodic_entries() == []
    app.start()  # nothing to schedule: the worker writes no entry
    app.stop()
    assert _periodic_rows(db) == 0


def test_aliases_seconds_and_time_zones_are_accepted_and_listed(app_factory):
    app = app_factory()
    for alias in ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"]:
        app.periodic(alias, action="report")
    app.periodic("*/2 * * * * *", action="report", timezone="Europe/Paris")
    app.periodic("0 9 * * MON-FRI", action="report", name="weekday mornings", queue="reports", params={"n": 1})
    entries = {entry.name: entry for entry in app.periodic_entries()}
    assert set(entries) == {
        "report @yearly",
        "report @annually",
        "report @monthly",
        "report @weekly",
        "report @daily",
        "report @hourly",
        "report */2 * * * * * Europe/Paris",
        "weekday mornings",
    }
    mornings = entries["weekday mornings"]
    assert (mornings.schedule, mornings.queue, mornings.action, mornings.timezone) == (
        "0 9 * * MON-FRI",
        "reports",
        "report",
        None,
    )
    # No worker has scheduled them yet; the next tick is read on the database clock.
    assert mornings.last_tick is None
    assert mornings.next_tick is not None and mornings.next_tick > datetime.now(timezone.utc)
    assert mornings.next_tick.weekday() < 5 and (mornings.next_tick.hour, mornings.next_tick.minute) == (9, 0)


def test_two_entries_of_one_app_cannot_share_a_name_and_job_options_are_checked(app_factory):
    app = app_factory()
    app.periodic("@hourly", action="report")
    with pytest.raises(ferroq.ConfigurationError, match="already registered"):
        app.periodic("@hourly", action="report", queue="elsewhere")
    app.periodic("@hourly", action="report", queue="elsewhere", name="report elsewhere")
    with pytest.raises(ferroq.InvalidOptionError):
        app.periodic("@daily", action="report", max_attempts=0)
    with pytest.raises(ferroq.InvalidNameError):
        app.periodic("@daily", action="")
    assert [e.name for e in app.periodic_entries()] == ["report @hourly", "report elsewhere"]


def test_the_decorator_uses_the_registered_performer_or_registers_the_function(app_factory, db):
    app = app_factory()

    @app.periodic("* * * * * *", params={"kind": "registered"})
    @app.performer("report", max_attempts=3)
    def report(job):
        return job.params

    @app.periodic("* * * * * *")
    def cleanup(job):
        return "clean"

    assert {(e.action, e.queue) for e in app.periodic_entries()} == {("report", "report"), ("cleanup", "cleanup")}
    with app:
        wait_until(lambda: len(app.list_jobs(state="completed")) >= 2, timeout=15)
    done = {job.action: job for job in app.list_jobs(state="completed")}
    assert done["report"].result == {"kind": "registered"}
    assert done["report"].max_attempts == 3, "the performer's defaults apply to its ticks' jobs"
    assert done["cleanup"].result == "clean"
    # Each job is scheduled at its tick: a whole second on the database clock.
    assert all(job.scheduled_at.microsecond == 0 for job in app.list_jobs())


def test_drain_runs_what_is_due_and_enqueues_no_tick(app_factory, db):
    app = app_factory()

    @app.periodic("* * * * * *")
    def tick(job):
        pass

    app.create_job("q", "tick")
    assert app.drain() == 1
    assert _periodic_rows(db) == 0
    assert sum(_tick_jobs(db).values()) == 1


@pytest.mark.timeout(120)
def test_four_worker_processes_enqueue_each_tick_exactly_once(backend, database_url, db, processes, app_factory):
    app_factory()  # the schema, before four processes race to create it
    workers = [processes.worker("apps.periodic_app:app", database_url) for _ in range(4)]
    wait_until(
        lambda: all(" started: database " in processes.output(w) for w in workers),
        timeout=30,
        message=processes.describe,
    )
    # Every process has started its worker by the next tick after this.
    all_running_at = db_now(db)
    time.sleep(1.0)
    wanted_ticks = 5

    def ticks_since_all_ran():
        return [t for t in _tick_jobs(db) if t > all_running_at]

    wait_until(lambda: len(ticks_since_all_ran()) >= wanted_ticks, timeout=30, message=processes.describe)
    for worker in workers:
        assert worker.poll() is None, processes.describe()
        processes.signal(worker, signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)
    counts = _tick_jobs(db)
    ticks = sorted(counts)
    print(f"\n{backend}: 4 workers, {len(ticks)} ticks, {sum(counts.values())} jobs: {[counts[t] for t in ticks]}")
    assert len([t for t in ticks if t > all_running_at]) >= wanted_ticks
    assert all(counts[t] == 1 for t in ticks), f"a tick was enqueued more than once: {counts}"
    gaps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(gap == 2.0 for gap in gaps), f"ticks were skipped while workers ran: {ticks}"


def _shift_last_tick_back(db, years: int) -> None:
    """Pretend no worker ran for ``years``: the entries' last tick moves that far back."""
    if db.backend == "sqlite":
        db.execute(f"UPDATE ferroq_periodic SET last_tick = last_tick - {years} * 366 * 86400 * 1000000")
    else:
        db.execute(f"UPDATE ferroq_periodic SET last_tick = last_tick - interval '{years} years'")


def test_a_restart_neither_replays_missed_ticks_nor_duplicates_one(backend, app_factory, db):
    def worker_app():
        app = app_factory()

        @app.periodic("@yearly")
        def tick(job):
            pass

        return app

    def started_entry(app):
        return app.periodic_entries()[0].last_tick

    # A new entry starts from its next tick: its latest past one (1 January) is not run.
    first = worker_app()
    with first:
        start = wait_until(lambda: started_entry(first), timeout=10)
        assert stays_true(lambda: sum(_tick_jobs(db).values()) == 0, 1.0)
    this_year = datetime(db_now(db).year, 1, 1, tzinfo=timezone.utc)
    assert start == this_year

    # Downtime of three years (three yearly ticks missed): one catch-up job, the latest tick.
    _shift_last_tick_back(db, 3)
    second = worker_app()
    with second:
        wait_until(lambda: sum(_tick_jobs(db).values()) >= 1, timeout=10)
        assert stays_true(lambda: sum(_tick_jobs(db).values()) == 1, 1.0)
    assert _tick_jobs(db) == Counter({this_year: 1})

    # Two more workers start at once: that tick is enqueued already, not again.
    third, fourth = worker_app(), worker_app()
    with third, fourth:
        assert stays_true(lambda: sum(_tick_jobs(db).values()) == 1, 1.5)
    print(f"\n{backend}: 3 yearly ticks missed, 3 workers restarted: {sum(_tick_jobs(db).values())} catch-up job")
    assert _tick_jobs(db) == Counter({this_year: 1})


def test_a_failing_scheduler_is_logged_and_recovers_without_stopping_the_worker(app_factory, db, caplog):
    caplog.set_level(logging.INFO, logger="ferroq")
    app = app_factory()

    @app.periodic("* * * * * *")
    def tick(job):
        pass

    @app.performer("other")
    def other(job):
        pass

    # The entries' table is gone (a bad manual change): the worker must live on.
    moved = "ferroq_periodic_away"
    db.execute(f"ALTER TABLE ferroq_periodic RENAME TO {moved}")
    with app:

        def failure_logged():
            return [
                r for r in caplog.records if r.name == "ferroq" and "enqueueing periodic jobs failed" in r.getMessage()
            ]

        wait_until(failure_logged, timeout=10)
        job = app.create_job("q", "other")
        wait_for_job(app, job.id, "completed", timeout=10)
        db.execute(f"ALTER TABLE {moved} RENAME TO ferroq_periodic")
        # Back: the entry starts, then its ticks come (the retry pause is at most 10 s).
        wait_until(lambda: len(_tick_jobs(db)) >= 2, timeout=30)
    assert all(count == 1 for count in _tick_jobs(db).values())
