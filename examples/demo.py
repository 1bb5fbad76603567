"""ferroq's main job, end to end: a worker runs real jobs across several blocking queues and
one concurrent queue. One job fails twice, blocks its queue while it retries with backoff,
then succeeds, and the queue carries on in order. Ends by itself when every job is done.

    python examples/demo.py     # jobs go to ./ferroq.db (SQLite), or to $FERROQ_DATABASE_URL
"""

from __future__ import annotations

import threading
import time

import ferroq

# No URL: ferroq's embedded default, sqlite:///ferroq.db, unless FERROQ_DATABASE_URL is set.
app = ferroq.App(scope="demo", concurrency=4, queues={"emails": 3}, poll_interval=5)
started = time.monotonic()
attempts_seen: dict[str, int] = {}
lock = threading.Lock()


def say(text: str) -> None:
    print(f"[{time.monotonic() - started:5.2f}s] {text}", flush=True)


@app.performer("charge", backoff=lambda job: 0.5 * job.attempts)
def charge(job: ferroq.Job) -> dict:
    order = job.params["order"]
    if order == "order-2" and job.attempts < 3:
        say(f"{job.queue}: charging {order} failed (attempt {job.attempts}); this queue is blocked until it succeeds")
        raise ConnectionError("payment gateway timed out")
    time.sleep(0.05)
    say(f"{job.queue}: charged {order} (attempt {job.attempts})")
    return {"charged": order}


@app.performer("send_mail")
async def send_mail(job: ferroq.Job) -> None:
    import asyncio

    await asyncio.sleep(0.05)
    say(f"{job.queue}: mailed {job.params['to']}")


def main() -> None:
    # Start from an empty demo scope so reruns show the same story.
    for job in app.list_jobs(limit=10_000):
        if job.state not in ("completed", "failed", "discarded"):
            app.cancel_job(job.id)
    jobs = app.create_jobs(
        [
            {"queue": f"customer-{c}", "action": "charge", "params": {"order": f"order-{c * 3 + n}"}}
            for c in range(3)
            for n in range(3)
        ]
        + [{"queue": "emails", "action": "send_mail", "params": {"to": f"user{i}@example.com"}} for i in range(6)]
    )
    ids = [job.id for job in jobs]
    say(f"enqueued {len(jobs)} jobs in one round trip into 4 queues (3 blocking, 1 concurrent)")
    with app:
        while True:
            states = [app.get_job(i).state for i in ids]
            if all(s in ("completed", "failed", "discarded") for s in states):
                break
            time.sleep(0.1)
    done = [app.get_job(i) for i in ids]
    completed = sum(j.state == "completed" for j in done)
    order2 = next(j for j in done if j.params.get("order") == "order-2")
    say(
        f"{completed}/{len(done)} jobs completed; order-2 took {order2.attempts} attempts"
        " (its failures are the WARNING lines above: a completed job keeps no error)"
    )
    order = [j.params["order"] for j in sorted((j for j in done if j.queue == "customer-0"), key=lambda j: j.done_at)]
    say(f"customer-0 ran in FIFO order: {order}")
    say(f"jobs are stored in {app.database_url} (table ferroq_jobs, scope 'demo'); list them with:")
    say(f"  ferroq jobs --database-url {app.database_url} --scope demo")


if __name__ == "__main__":
    main()
