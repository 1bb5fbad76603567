"""What the engine reports goes to Python's logging, under the logger "ferroq"."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import allow_job_updates, reject_job_updates, wait_for_job, wait_until

import ferroq


def test_a_failing_claim_is_logged_and_the_worker_recovers(app_factory, db, caplog):
    caplog.set_level(logging.INFO, logger="ferroq")
    app = app_factory(poll_interval=0.2)

    @app.performer("ok")
    def ok(job):
        return "done"

    app.start()
    reject_job_updates(db)
    try:
        job = app.create_job("q", "ok")

        def claim_failure_logged():
            return [
                r
                for r in caplog.records
                if r.name == "ferroq"
                and r.levelno == logging.WARNING
                and "claiming jobs failed" in r.getMessage()
                and "updates rejected by the test" in r.getMessage()
            ]

        wait_until(claim_failure_logged, timeout=10)
    finally:
        allow_job_updates(db)
    # The worker kept retrying and runs the job once the database accepts updates again.
    wait_for_job(app, job.id, "completed", timeout=15)


def _lines(caplog, pattern: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ferroq" and re.search(pattern, r.getMessage())]


def test_the_worker_logs_each_outcome_at_its_level(app_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="ferroq")
    app = app_factory(poll_interval=0.2, concurrency=4)

    @app.performer("ok")
    def ok(job):
        return "done"

    @app.performer("flaky", backoff=lambda job: 0.2, max_attempts=3)
    def flaky(job):
        if job.attempts == 1:
            raise ValueError(f"flaky failure\nsecond line of job {job.id}")

    @app.performer("doomed", backoff=lambda job: 0.1, max_attempts=2)
    def doomed(job):
        raise RuntimeError("always broken")

    @app.performer("sleepy")
    def sleepy(job):
        return ferroq.Snooze(3600)

    @app.performer("unwanted")
    def unwanted(job):
        return ferroq.Discard("not needed any more")

    jobs = {action: app.create_job(f"q-{action}", action) for action in ("ok", "flaky", "doomed", "sleepy", "unwanted")}
    app.start()
    try:
        for action, state in (
            ("ok", "completed"),
            ("flaky", "completed"),
            ("doomed", "failed"),
            ("sleepy", "scheduled"),
            ("unwanted", "discarded"),
        ):
            wait_for_job(app, jobs[action].id, state, timeout=15)
    finally:
        app.stop()

    def one(pattern: str, level: int) -> str:
        found = wait_until(lambda: _lines(caplog, pattern), timeout=5, message=pattern)
        assert [r.levelno for r in found] == [level], (pattern, [(r.levelname, r.getMessage()) for r in found])
        return found[0].getMessage()

    started = one(r"worker .* started: database ", logging.INFO)
    assert 'scope "default"' in started and "all queues" in started
    assert '"doomed", "flaky", "ok", "sleepy", "unwanted"' in started and "concurrency 4" in started
    ids = {action: job.id for action, job in jobs.items()}
    one(rf"job {ids['ok']} \(ok on queue \"q-ok\"\) completed after \S+", logging.DEBUG)
    retry = one(rf"job {ids['flaky']} \(flaky on queue \"q-flaky\"\) failed attempt 1/3", logging.WARNING)
    assert "ValueError: flaky failure; next attempt in 0.2s (about " in retry, retry
    assert "second line" not in retry and "Traceback" not in retry
    one(rf"job {ids['flaky']} \(flaky .*\) completed after", logging.DEBUG)
    one(rf"job {ids['doomed']} \(doomed .*\) failed attempt 1/2 .*RuntimeError: always broken", logging.WARNING)
    one(
        rf"job {ids['doomed']} \(doomed .*\) failed for good \(attempt 2/2\).*: RuntimeError: always broken",
        logging.ERROR,
    )
    one(rf"job {ids['sleepy']} \(sleepy .*\) snoozed after .*: runs again in 3600.0s", logging.INFO)
    one(rf"job {ids['unwanted']} \(unwanted .*\) discarded after .*: not needed any more", logging.INFO)
    one(r"worker .* stopping: waiting for 0 jobs", logging.INFO)
    one(r"worker .* stopped; \d+ jobs processed", logging.INFO)


def test_at_info_the_worker_logs_no_line_per_completed_job(app_factory, caplog):
    caplog.set_level(logging.INFO, logger="ferroq")
    app = app_factory()

    @app.performer("ok")
    def ok(job):
        return None

    app.create_jobs([{"queue": "q", "action": "ok"}] * 20)
    assert app.drain() == 20
    assert not _lines(caplog, r"completed"), [r.getMessage() for r in caplog.records]


@pytest.mark.only_on("postgres")
def test_the_start_line_masks_the_password(app_factory, database_url, caplog):
    caplog.set_level(logging.INFO, logger="ferroq")
    parts = urlsplit(database_url)
    user = parts.netloc.rpartition("@")[0] or "postgres"
    host = parts.netloc.rpartition("@")[2]
    # The test server trusts local connections: any password is accepted, and must not show.
    with_password = urlunsplit(parts._replace(netloc=f"{user}:hunter2@{host}"))
    app = app_factory(url=with_password)

    @app.performer("ok")
    def ok(job):
        return None

    app.start()
    app.stop()
    started = wait_until(lambda: _lines(caplog, r"started: database "), timeout=5)
    message = started[0].getMessage()
    assert "hunter2" not in message and f"{user}:***@{host}" in message, message
