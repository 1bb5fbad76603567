"""The ``ferroq jobs|retry|cancel|worker`` commands."""

from __future__ import annotations

import importlib.metadata
import signal
import subprocess
import sys

import pytest
from helpers import ferroq_cli, subprocess_env, wait_for_job, wait_for_jobs
from helpers.paths import TESTS_DIR
from helpers.pg_cluster import free_port

import ferroq


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
        assert 'queues ["reports", "shop:*"]' in processes.output(worker)
        left = app.get_job(other.id)
        assert (left.state, left.attempts) == ("available", 0), "a queue the worker was not given stays untouched"
    finally:
        processes.signal(worker, signal.SIGTERM)
        worker.wait(timeout=30)


def test_cli_takes_the_database_and_scope_from_the_app(app_factory, database_url, tmp_path):
    billed = app_factory(scope="billing").create_job("invoice_queue", "charge")
    app_factory().create_job("mail_queue", "send_mail")
    elsewhere = tmp_path / "elsewhere.db"
    env = subprocess_env(f"sqlite:///{elsewhere}", TEST_APP_DATABASE_URL=database_url)

    proc = ferroq_cli("jobs", "--app", "apps.scoped_app:app", env=env)
    assert proc.returncode == 0, proc.stderr
    assert str(billed.id) in proc.stdout and "invoice_queue" in proc.stdout
    assert "mail_queue" not in proc.stdout, "listed the default scope, not the App's"
    assert f"database {database_url}, scope 'billing'" in proc.stderr
    assert not elsewhere.exists(), "$FERROQ_DATABASE_URL was used instead of the App's database"

    proc = ferroq_cli("retry", str(billed.id), "--app", "apps.scoped_app:app", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"job {billed.id} is available" in proc.stdout

    proc = ferroq_cli("jobs", "--app", "apps.scoped_app:app", "--scope", "other", env=env)
    assert proc.returncode != 0 and "leave out --database-url and --scope" in proc.stderr


def test_cli_read_commands_do_not_create_a_missing_sqlite_database(tmp_path):
    path = tmp_path / "ferroq.db"
    for command in (["jobs"], ["retry", "1"], ["cancel", "1"]):
        proc = ferroq_cli(*command, database_url=f"sqlite:///{path}")
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert f"no database at {path} (run `ferroq migrate` or start a worker to create it)" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not path.exists(), f"ferroq {command[0]} created {path}"
    proc = ferroq_cli("migrate", database_url=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr
    assert path.exists()
    proc = ferroq_cli("jobs", database_url=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr


def test_cli_version_is_the_package_version():
    proc = ferroq_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ferroq {ferroq.__version__}"
    assert ferroq.__version__ == importlib.metadata.version("ferroq")


def test_cli_help_documents_the_exit_codes():
    proc = ferroq_cli("--help")
    assert proc.returncode == 0
    assert "exit codes: 0 ok, 1 error" in proc.stdout and "2 usage" in proc.stdout
    assert ferroq_cli("no-such-command").returncode == 2


def test_cli_jobs_into_head_ends_quietly(app_factory, database_url):
    app = app_factory()
    # Far more than a pipe buffer holds, so that the CLI is still writing when head leaves.
    app.create_jobs([{"queue": f"q{i}", "action": "a"} for i in range(3000)])
    script = (
        f"{sys.executable} -m ferroq jobs --limit 3000 --database-url '{database_url}' | head -1; "
        'echo "ferroq exited ${PIPESTATUS[0]}" >&2'
    )
    proc = subprocess.run(  # noqa: S603 - a fixed command line
        ["bash", "-c", script],
        env=subprocess_env(),
        cwd=str(TESTS_DIR),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split()[:2] == ["id", "state"], proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert "ferroq exited 141" in proc.stderr, proc.stderr


def test_cli_jobs_shows_times_and_no_stale_error_on_a_completed_job(app_factory, database_url):
    app = app_factory(poll_interval=0.2)
    calls = []

    @app.performer("flaky", backoff=lambda job: 0.1)
    def flaky(job):
        calls.append(job.attempts)
        if job.attempts == 1:
            raise ValueError("stale failure")

    @app.performer("doomed", backoff=lambda job: 3600)
    def doomed(job):
        raise ValueError("retry much later")

    recovered = app.create_job("q1", "flaky")
    retrying = app.create_job("q2", "doomed")
    with app:
        done = wait_for_job(app, recovered.id, "completed", timeout=15)
        waiting = wait_for_job(app, retrying.id, "retryable", timeout=15)
    assert done.attempts == 2 and done.error is None, "a completed job keeps no error of an earlier attempt"
    assert waiting.next_attempt_at is not None

    proc = ferroq_cli("jobs", "--database-url", database_url)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert "scheduled_at" in header and "next_attempt_at" in header
    (completed_row,) = [row for row in rows if row.split()[0] == str(recovered.id)]
    assert "stale failure" not in completed_row
    (retrying_row,) = [row for row in rows if row.split()[0] == str(retrying.id)]
    assert waiting.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") in retrying_row
    assert waiting.scheduled_at.strftime("%Y-%m-%d %H:%M:%S") in retrying_row
    assert "retry much later" in retrying_row


def test_a_missing_job_names_its_scope(app_factory, database_url):
    app = app_factory(scope="billing")
    missing = app.create_job("q", "a").id + 1000
    for change in (app.retry_job, app.cancel_job):
        with pytest.raises(ferroq.JobNotFoundError, match=f'no job {missing} in scope "billing"'):
            change(missing)
    assert app.get_job(missing) is None
    proc = ferroq_cli("cancel", str(missing), "--database-url", database_url, "--scope", "billing")
    assert proc.returncode == 1
    assert f'no job {missing} in scope "billing"' in proc.stderr


@pytest.mark.only_on("postgres")
def test_postgres_before_migrate_says_to_run_migrate(app_factory, database_url):
    app = app_factory(migrate=False)
    fix = "the ferroq tables do not exist in this database: run `ferroq migrate` (or App.migrate())"
    with pytest.raises(ferroq.DatabaseError, match="run `ferroq migrate`") as raised:
        app.list_jobs()
    assert fix in str(raised.value)
    with pytest.raises(ferroq.DatabaseError, match="run `ferroq migrate`"):
        app.create_job("q", "a")
    proc = ferroq_cli("jobs", "--database-url", database_url)
    assert proc.returncode == 1 and fix in proc.stderr, proc.stderr


def test_a_refused_connection_names_host_port_and_cause():
    port = free_port()
    url = f"postgresql://postgres:hunter2@127.0.0.1:{port}/test"
    app = ferroq.App(url, connect_timeout=3)
    expected = f"could not connect to PostgreSQL at 127.0.0.1:{port}: connection refused"
    with pytest.raises(ferroq.DatabaseError, match=expected):
        app.list_jobs()
    app.close()
    proc = ferroq_cli("jobs", "--database-url", url)
    assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stderr and f"postgres:***@127.0.0.1:{port}" in proc.stderr
