"""``App.stats()`` and ``ferroq stats``: jobs per queue and state, the age of the oldest
available job, and every held blocking queue with why it is held."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pytest
from helpers import ferroq_cli, wait_for_job

import ferroq


def test_stats_counts_jobs_per_queue_and_state(app_factory, db):
    app = app_factory(queues={"emails": 5}, poll_interval=60)

    @app.performer("ok")
    def ok(job):
        pass

    for _ in range(3):
        app.create_job("emails", "ok")
    app.create_job("emails", "ok", delay=3600)
    done = app.create_job("reports", "ok")
    assert app.drain() == 4
    waiting = [app.create_job("emails", "ok") for _ in range(2)]
    # One of them became claimable two minutes ago, on the database clock.
    db.execute(f"UPDATE ferroq_jobs SET run_at = {db.seconds_from_now_sql(-120)} WHERE id = %s", [waiting[0].id])

    stats = app.stats()
    by_queue = {q["queue"]: q for q in stats["queues"]}
    assert stats["scope"] == "default"
    assert sorted(by_queue) == ["emails", "reports"]
    emails = by_queue["emails"]
    assert emails["blocking"] is False
    assert emails["counts"] == {
        "scheduled": 1,
        "available": 2,
        "running": 0,
        "retryable": 0,
        "completed": 3,
        "failed": 0,
        "discarded": 0,
    }
    assert 119 <= emails["oldest_available_age"] < 600
    reports = by_queue["reports"]
    assert reports["blocking"] is True and reports["counts"]["completed"] == 1
    assert reports["oldest_available_age"] is None
    assert app.get_job(done.id).state == "completed"
    assert stats["blocked"] == [] and stats["blocked_total"] == 0


def _blocked_by_queue(stats):
    return {b["queue"]: b for b in stats["blocked"]}


def test_stats_names_every_held_blocking_queue_and_why(app_factory):
    app = app_factory(poll_interval=60)
    release = threading.Event()

    @app.performer("stuck", backoff=lambda job: 3600)
    def stuck(job):
        raise RuntimeError("still down")

    @app.performer("hold")
    def hold(job):
        release.wait(30)

    @app.performer("ok")
    def ok(job):
        pass

    @app.performer("later")
    def later_please(job):
        return ferroq.Snooze(3600)

    retrying = app.create_job("retrying", "stuck")
    app.create_job("retrying", "ok")
    orphan = app.create_job("orphan", "nobody_handles_this")
    app.create_job("orphan", "ok")
    later = app.create_job("later", "later")  # snoozes for an hour, holding the two behind it
    app.create_job("later", "ok")
    app.create_job("later", "ok")
    app.create_job("alone-later", "ok", delay=3600)  # delayed, but holds nothing
    busy = app.create_job("busy", "hold")
    app.create_job("busy", "ok")
    try:
        app.start()
        wait_for_job(app, retrying.id, "retryable")
        wait_for_job(app, busy.id, "running")
        wait_for_job(app, later.id, "scheduled")

        stats = app.stats()
        blocked = _blocked_by_queue(stats)
        assert sorted(blocked) == ["busy", "later", "orphan", "retrying"], stats["blocked"]
        assert stats["blocked_total"] == 4

        assert blocked["retrying"]["cause"] == "retrying" and blocked["retrying"]["head_id"] == retrying.id
        until = datetime.fromisoformat(blocked["retrying"]["until"].replace("Z", "+00:00"))
        assert 3000 < (until - datetime.now(timezone.utc)).total_seconds() < 3700
        assert "retrying: attempt 2 at" in blocked["retrying"]["reason"]
        assert blocked["retrying"]["behind"] == 1

        assert blocked["orphan"]["cause"] == "no_performer" and blocked["orphan"]["head_id"] == orphan.id
        assert "nobody_handles_this" in blocked["orphan"]["reason"]

        assert blocked["later"]["cause"] == "scheduled" and blocked["later"]["head_id"] == later.id
        assert blocked["later"]["behind"] == 2

        assert blocked["busy"]["cause"] == "running" and blocked["busy"]["since"] is not None
        assert app.worker_name in blocked["busy"]["reason"]

        # The limit bounds the list, not the total.
        limited = app.stats(blocked_limit=2)
        assert [b["queue"] for b in limited["blocked"]] == ["busy", "later"]
        assert limited["blocked_total"] == 4

        # Without performers of its own, an App cannot judge "no performer".
        observer = app_factory()
        assert sorted(_blocked_by_queue(observer.stats())) == ["busy", "later", "retrying"]
    finally:
        release.set()


def test_stats_names_paused_queues_and_ferroq_pause_and_resume_change_them(app_factory, database_url):
    app = app_factory(poll_interval=60)

    @app.performer("ok")
    def ok(job):
        pass

    head = app.create_job("mail.a", "ok")
    app.create_job("mail.a", "ok")
    app.create_job("mail.b", "ok")
    app.create_job("other", "ok")

    paused = ferroq_cli("pause", "mail*", database_url=database_url)
    assert paused.returncode == 0 and paused.stdout.strip() == "paused mail*", paused.stdout + paused.stderr
    assert app.drain() == 1  # only "other" runs

    stats = app.stats()
    assert {q["queue"]: q["paused"] for q in stats["queues"]} == {"mail.a": True, "mail.b": True, "other": False}
    assert [p["queue"] for p in stats["paused"]] == ["mail*"]
    blocked = _blocked_by_queue(stats)
    assert sorted(blocked) == ["mail.a", "mail.b"]
    assert blocked["mail.a"]["cause"] == "paused" and blocked["mail.a"]["head_id"] == head.id
    assert "paused" in blocked["mail.a"]["reason"] and blocked["mail.a"]["behind"] == 1
    table = ferroq_cli("stats", database_url=database_url)
    assert "PAUSED: mail*" in table.stdout and "(paused)" in table.stdout, table.stdout

    resumed = ferroq_cli("resume", "mail*", database_url=database_url)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "resumed mail*", resumed.stdout + resumed.stderr
    assert app.drain() == 3
    assert app.stats()["blocked"] == [] and app.stats()["paused"] == []


def test_ferroq_stats_prints_a_table_json_and_an_exit_code_for_scripts(app_factory, database_url):
    app = app_factory(poll_interval=60)

    @app.performer("stuck", backoff=lambda job: 3600)
    def stuck(job):
        raise RuntimeError("still down")

    app.create_job("customer-7", "stuck")
    app.create_job("customer-7", "stuck")
    app.create_job("fine", "stuck", delay=3600)
    assert app.drain() == 1

    table = ferroq_cli("stats", database_url=database_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["QUEUE", "KIND", "SCHEDULED", "AVAILABLE"]
    assert any(line.split()[:2] == ["customer-7", "blocking"] for line in lines)
    assert "BLOCKED QUEUES (1 of 1)" in table.stdout
    assert "retrying: attempt 2" in table.stdout

    as_json = ferroq_cli("stats", "--json", database_url=database_url)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert [b["queue"] for b in document["blocked"]] == ["customer-7"]
    assert {q["queue"] for q in document["queues"]} == {"customer-7", "fine"}

    checked = ferroq_cli("stats", "--check", database_url=database_url)
    assert checked.returncode == 3, checked.stdout + checked.stderr

    app.cancel_jobs(queue="customer-7")
    assert ferroq_cli("stats", "--check", database_url=database_url).returncode == 0


@pytest.mark.parametrize("command", ["retry", "cancel", "delete"])
def test_cli_bulk_changes_need_filters_or_all(app_factory, database_url, command):
    app = app_factory()
    job = app.create_job("q", "a", delay=3600)
    refused = ferroq_cli(command, database_url=database_url)
    assert refused.returncode != 0 and "--all" in refused.stderr
    assert app.get_job(job.id).state == "scheduled"


def test_cli_bulk_changes_redrive_and_purge_the_dead_letter(app_factory, database_url):
    app = app_factory(poll_interval=60)
    failing = {"on": True}

    @app.performer("flaky", max_attempts=1)
    def flaky(job):
        if failing["on"]:
            raise RuntimeError("down")

    jobs = [app.create_job(f"q{i}", "flaky") for i in range(4)]
    assert app.drain() == 4
    failing["on"] = False

    retried = ferroq_cli("retry", "--state", "failed", "--queue", "q0", database_url=database_url)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "retry: 1 jobs"
    assert app.drain() == 1 and app.get_job(jobs[0].id).state == "completed"

    kept = ferroq_cli("delete", "--state", "failed", "--older-than", "7d", database_url=database_url)
    assert kept.returncode == 0 and kept.stdout.strip() == "delete: 0 jobs", kept.stdout + kept.stderr
    purged = ferroq_cli("delete", "--state", "failed,discarded", database_url=database_url)
    assert purged.returncode == 0 and purged.stdout.strip() == "delete: 3 jobs", purged.stdout + purged.stderr
    assert [app.get_job(j.id) for j in jobs[1:]] == [None] * 3

    bad = ferroq_cli("delete", "--state", "running", database_url=database_url)
    assert bad.returncode == 1 and "cannot delete running jobs" in bad.stderr
    bad_age = ferroq_cli("delete", "--older-than", "a week", database_url=database_url)
    assert bad_age.returncode == 2 and "duration" in bad_age.stderr
