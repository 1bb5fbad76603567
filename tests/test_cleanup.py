"""Retention cleanup: an app deletes its own completed jobs after job_retention, nothing else."""

from __future__ import annotations

from datetime import timedelta

from helpers import stays_true, wait_for_job, wait_until


def test_cleanup_deletes_only_own_completed_jobs(app_factory):
    # Another scope's completed job, finished first (oldest of all).
    other = app_factory(scope="other")

    @other.performer("ok")
    def other_ok(job):
        return "ok"

    other_done = other.create_job("q", "ok")
    assert other.drain() == 1

    app = app_factory(scope="mine", cleanup_interval=0.5, job_retention=timedelta(seconds=0.5), poll_interval=60)

    @app.performer("ok")
    def ok(job):
        return "ok"

    @app.performer("boom")
    def boom(job):
        raise ValueError("kaput")

    failed = app.create_job("f", "boom", max_attempts=1)
    pending = app.create_job("p", "ok", delay=3600)
    app.start()
    wait_for_job(app, failed.id, "failed")
    completed = app.create_job("c", "ok")
    wait_for_job(app, completed.id, "completed")

    wait_until(lambda: app.get_job(completed.id) is None, timeout=10, message="the completed job to be cleaned up")

    def untouched():
        return (
            app.get_job(failed.id) is not None
            and app.get_job(failed.id).state == "failed"
            and app.get_job(pending.id) is not None
            and other.get_job(other_done.id) is not None
        )

    # Older than the deleted job, so a wrong sweep would already have taken them; keep
    # watching for a couple more sweeps.
    assert untouched()
    assert stays_true(untouched, 1.5)


def test_cleanup_is_off_by_default(app_factory):
    app = app_factory(job_retention=timedelta(seconds=0.1), poll_interval=60)

    @app.performer("ok")
    def ok(job):
        return "ok"

    app.start()
    job = app.create_job("q", "ok")
    wait_for_job(app, job.id, "completed")
    assert stays_true(lambda: app.get_job(job.id) is not None, 1.5)


def test_cleanup_interval_accepts_seconds_and_timedelta(app_factory):
    for interval in (0.3, timedelta(milliseconds=300)):
        app = app_factory(
            scope=f"s{interval!s}", cleanup_interval=interval, job_retention=timedelta(seconds=0.5), poll_interval=60
        )

        @app.performer("ok")
        def ok(job):
            return "ok"

        app.start()
        job = app.create_job("q", "ok")
        wait_for_job(app, job.id, ("completed",))
        wait_until(lambda app=app, job=job: app.get_job(job.id) is None, timeout=10)
        app.stop()


def test_completed_jobs_are_cleaned_up_unless_turned_off(app_factory):
    # Retention applies by default: a worker left running for months must not keep every job.
    app = app_factory(scope="defaults")
    assert (app.cleanup_interval, app.job_retention) == (300.0, 7 * 24 * 3600.0)
    assert app_factory(scope="off", cleanup_interval=None).cleanup_interval is None
