"""What the engine reports goes to Python's logging, under the logger "ferroq"."""

from __future__ import annotations

import logging

from helpers import allow_job_updates, reject_job_updates, wait_for_job, wait_until


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
