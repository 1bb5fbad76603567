"""The ``ferroq jobs|retry|cancel|worker`` commands."""

from __future__ import annotations

import signal

from helpers import ferroq_cli, wait_for_jobs


def test_cli_jobs_lists_and_filters(app_factory, database_url):
    app = app_factory()
    other = app_factory(scope="billing")
    mail = app.create_job("mail_queue", "send_mail", {"to": "a@b.c"})
    later = app.create_job("report_queue", "build_report", delay=3600)
    billed = other.create_job("invoice_queue", "charge")

    proc = ferroq_cli("jobs", "--database-url", database_url)
    assert proc.returncode == 0, proc.stderr
    assert "mail_queue" in proc.stdout and "report_queue" in proc.stdout
    assert "invoice_queue" not in proc.stdout, "default scope listed another scope's jobs"

    proc = ferroq_cli("jobs", "--database-url", database_url, "--queue", "mail_queue")
    assert proc.returncode == 0, proc.stderr
    assert "send_mail" in proc.stdout and "build_report" not in proc.stdout
    assert str(mail.id) in proc.stdout

    proc = ferroq_cli("jobs", "--state", "scheduled", database_url=database_url)
    assert proc.returncode == 0, proc.stderr
    assert "build_report" in proc.stdout and "send_mail" not in proc.stdout
    assert str(later.id) in proc.stdout

    proc = ferroq_cli("jobs", "--database-url", database_url, "--scope", "billing")
    assert proc.returncode == 0, proc.stderr
    assert "invoice_queue" in proc.stdout and "mail_queue" not in proc.stdout
    assert str(billed.id) in proc.stdout


def test_cli_retry_and_cancel(app_factory, database_url):
    app = app_factory()
    scheduled = app.create_job("q1", "a", delay=3600)
    victim = app.create_job("q2", "a")

    proc = ferroq_cli("retry", str(scheduled.id), "--database-url", database_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert app.get_job(scheduled.id).state == "available"

    proc = ferroq_cli("cancel", str(victim.id), "--database-url", database_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cancelled = app.get_job(victim.id)
    assert cancelled.state == "discarded" and "cancelled" in cancelled.error

    for command in ("retry", "cancel"):
        proc = ferroq_cli(command, str(victim.id + 1000), "--database-url", database_url)
        assert proc.returncode != 0, f"{command} of an unknown id succeeded"


def test_cli_worker_serves_only_the_queues_it_is_given(app_factory, database_url, processes, ledger):
    app = app_factory()
    served = [app.create_job(queue, "record", {}) for queue in ("reports", "shop:1")]
    other = app.create_job("emails", "record", {})
    worker = processes.worker("apps.ledger_app:app", database_url, "--queues", "reports, shop:*")
    try:
        wait_for_jobs(app, [job.id for job in served], "completed", timeout=30)
        assert "queues ['reports', 'shop:*']" in processes.output(worker)
        left = app.get_job(other.id)
        assert (left.state, left.attempts) == ("available", 0), "a queue the worker was not given stays untouched"
    finally:
        processes.signal(worker, signal.SIGTERM)
        worker.wait(timeout=30)
