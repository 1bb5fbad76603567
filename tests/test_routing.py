"""Routing by performer: a worker claims only jobs whose action it has a performer for."""

from __future__ import annotations

from helpers import ferroq_cli, wait_for_jobs


def test_two_workers_with_different_performers_each_run_only_their_own_jobs(app_factory):
    mailer = app_factory(poll_interval=60, worker_name="mailer")
    biller = app_factory(poll_interval=60, worker_name="biller")
    ran: dict[str, list[int]] = {"mailer": [], "biller": []}

    @mailer.performer("mail")
    def mail(job):
        ran["mailer"].append(job.id)

    @biller.performer("charge")
    def charge(job):
        ran["biller"].append(job.id)

    jobs = [
        mailer.create_job(f"customer-{n % 4}", "mail" if n % 2 else "charge", {"n": n}) for n in range(20)
    ] + mailer.create_jobs([{"queue": "bulk", "action": "mail"}, {"queue": "bulk", "action": "charge"}])
    with mailer, biller:
        done = wait_for_jobs(mailer, [j.id for j in jobs], "completed", timeout=20)
    by_worker = {job.id: job.attempted_by for job in done}
    for job in jobs:
        expected = "mailer" if job.action == "mail" else "biller"
        assert by_worker[job.id] == expected, f"job {job.id} ({job.action}) ran on {by_worker[job.id]}"
    assert all(job.attempts == 1 and job.error is None for job in done), "no job failed for a missing performer"
    assert sorted(ran["mailer"] + ran["biller"]) == sorted(j.id for j in jobs)


def test_a_job_no_worker_serves_waits_available_and_holds_its_blocking_queue(app_factory):
    app = app_factory(poll_interval=60)
    ran = []

    @app.performer("mail")
    def mail(job):
        ran.append(job.id)

    orphan = app.create_job("customer-1", "tpyo")  # no performer anywhere
    behind = app.create_job("customer-1", "mail")  # FIFO: waits behind the orphan
    elsewhere = app.create_job("customer-2", "mail")
    assert app.drain() == 1, "drain returns without the job nobody serves"
    assert ran == [elsewhere.id]
    waiting = app.get_job(orphan.id)
    assert (waiting.state, waiting.attempts, waiting.error) == ("available", 0, None)
    assert app.get_job(behind.id).state == "available"
    assert [j.id for j in app.list_jobs(action="tpyo", state="available")] == [orphan.id]
    # Why each waits is visible to operators, in listings and in `ferroq jobs`.
    assert waiting.blocked_by is None
    assert waiting.waiting_reason == 'ready: waits for a free worker that serves action "tpyo" and queue "customer-1"'
    listed_behind = app.get_job(behind.id)
    assert listed_behind.blocked_by == orphan.id
    assert listed_behind.waiting_reason == f'behind job {orphan.id}, the head of blocking queue "customer-1"'
    cli = ferroq_cli("jobs", "--database-url", app.database_url, "--queue", "customer-1")
    assert cli.returncode == 0, cli.stderr
    assert f'behind job {orphan.id}, the head of blocking queue "customer-1"' in cli.stdout
    assert 'waits for a free worker that serves action "tpyo"' in cli.stdout

    @app.performer("tpyo")
    def fixed(job):
        ran.append(job.id)

    assert app.drain() == 2
    assert ran == [elsewhere.id, orphan.id, behind.id], "the queue ran in FIFO order once served"
