"""Every public API of ferroq in one typed program: `mypy --strict` checks it in the test
command, and `tests/test_typed_example.py` runs it on both backends.

    python examples/typed_app.py [DATABASE_URL]     # default: a SQLite file in a temp dir
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ferroq
from ferroq import Discard, Fail, Job, JobState, Snooze
from ferroq.testing import assert_job_created, refute_job_created


def build(url: str) -> ferroq.App:
    app = ferroq.App(
        url,
        scope="typed",
        poll_interval=timedelta(seconds=5),
        concurrency=4,
        queues={"emails": 2},
        job_retention=timedelta(days=1),
        cleanup_interval=None,
        lease_ttl=10.0,
        max_params_size=64 * 1024,
        stop_timeout=5,
        connect_timeout=5.0,
        wakeup_interval=0.05,
        worker_name="typed-example",
    )

    @app.performer
    def send_mail(job: Job) -> dict[str, str]:
        return {"sent_to": str(job.params["to"])}

    def twice(job: Job) -> float:
        return 0.01 * job.attempts

    def alert(job: Job, error: str) -> None:
        print(f"job {job.id} failed for good: {error.splitlines()[-1]}")

    @app.performer("flaky", backoff=twice, on_failure=alert)
    async def flaky(job: Job) -> Fail | None:
        return Fail("not yet") if not job.is_last_attempt else None

    @app.performer("later")
    def later(job: Job) -> Snooze | Discard:
        return Snooze(timedelta(milliseconds=10)) if job.attempts < 2 else Discard("enough")

    @app.periodic("@daily", timezone="Europe/Paris")
    def nightly(job: Job) -> None:
        print(f"nightly tick of {job.scheduled_at}")

    app.periodic("0 * * * *", action="send_mail", queue="emails", params={"to": "ops@x.y"}, name="hourly", priority=5)
    return app


async def enqueue_async(app: ferroq.App) -> list[Job]:
    first = await app.acreate_job("customer-9", "send_mail", {"to": "c@d.e"}, priority=1)
    rest = await app.acreate_jobs([{"queue": "customer-9", "action": "send_mail", "params": {"to": "f@g.h"}}])
    return [first, *rest]


def main(url: str) -> None:
    app = build(url)
    app.migrate()
    mail = app.create_job(
        "emails",
        "send_mail",
        {"to": "a@b.c"},
        scheduled_at=datetime.now(timezone.utc) - timedelta(seconds=1),
        timeout=timedelta(seconds=30),
        max_backoff=60,
        max_attempts=3,
        priority=0,
    )
    flaky = app.create_job("customer-1", "flaky", max_attempts=2)
    digest = app.create_job("digests", "send_mail", {"to": "d@e.f"}, unique_key="digest:d@e.f", unique_period=3600)
    again = app.create_job(
        "digests", "send_mail", {"to": "d@e.f"}, unique_key="digest:d@e.f", unique_period=timedelta(hours=1)
    )
    assert again.duplicate or again.id != digest.id  # a new window only if the hour turned in between
    assert digest.unique_key == "digest:d@e.f" and digest.unique_period == 3600
    app.create_job(
        "customer-4",
        "send_mail",
        unique_key="welcome:4",
        unique_states=["scheduled", "available", "running", "retryable", "completed"],
    )
    snoozing = app.create_job("customer-2", "later", delay=0)
    bulk = app.create_jobs([{"queue": "emails", "action": "send_mail", "params": {"to": f"{n}@x.y"}} for n in range(3)])
    bulk += asyncio.run(enqueue_async(app))
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection, connection:
            bulk.append(app.create_job("emails", "send_mail", {"to": "tx@b.c"}, connection=connection))

    ran = app.drain()
    with app:
        app.notify()
    ran += app.drain()

    done = app.get_job(mail.id)
    assert done is not None and done.state is JobState.COMPLETED and done.result == {"sent_to": "a@b.c"}
    page = app.paginate_jobs(page_size=2, page_number=1, state=[JobState.COMPLETED, "failed"], order_by="id")
    listed = app.list_jobs(queue="emails", action="send_mail", search="a@b", limit=10, offset=0, descending=True)
    print(f"{ran} attempts; {page.total} finished jobs, first page {[j.id for j in page.data]}; listed {listed}")
    print(f"flaky is {app.get_job(flaky.id)}, snoozing is {app.get_job(snoozing.id)}, bulk {len(bulk)} jobs")

    entries: list[ferroq.PeriodicEntry] = app.periodic_entries()
    print(f"periodic: {[(e.name, e.next_tick) for e in entries]}")

    waiting = app.create_job("customer-3", "send_mail", {"to": "z@z.z"}, delay=3600)
    cancelled = app.cancel_job(waiting.id)
    retried = app.retry_job(cancelled.id)
    assert retried.state == "available"
    assert retried.cancel_requested_at is None
    app.pause_queue("reports*")
    paused: list[tuple[str, datetime]] = app.paused_queues()
    assert [name for name, _ in paused] == ["reports*"]
    app.resume_queue("reports*")
    assert_job_created(app, queue="customer-3", params={"to": "z@z.z"})
    refute_job_created(app, action="never")
    try:
        app.create_job("q", "a", max_attempts=0)
    except ferroq.InvalidOptionError as exc:
        print(f"refused as expected: {exc}")
    app.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'typed.db'}")
