"""ferroq, from the repository (built into .venvs/ferroq with `pip install /work/main`).

The same module serves PostgreSQL and SQLite: `dsn` is whatever run.py passes, a
`postgresql://` URL or `sqlite:///<dir>/ferroq.db` (with `?synchronous=full|normal` when this
ferroq understands it; run.py checks that, see FERROQ_SQLITE_URL there)."""

from __future__ import annotations

from typing import Any

import ferroq

DEFAULT_CONCURRENCY = 1000  # run.py always sends the concurrency of the scenario
#: The "bench" queue's limit across all workers. The peers have no such global cap (their
#: queue settings limit one process), so ferroq's is set out of the way: what is equal for
#: every system is the worker's own concurrency. Jobs a worker claims ahead (its `prefetch`,
#: by default as many as it runs, at most 100) count against a queue's limit, so a limit equal
#: to the concurrency would turn claiming ahead off.
QUEUE_LIMIT = 1_000_000


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        self.mode, self.dsn, self.concurrency = mode, dsn, concurrency
        # Concurrent queue "bench" (see QUEUE_LIMIT); the k0..k999 queues of the blocking
        # scenario are not listed, so they are blocking queues (one running job per queue, FIFO).
        self.app = ferroq.App(dsn, concurrency=concurrency, queues={"bench": QUEUE_LIMIT})

        @self.app.performer("noop")
        async def noop(job: Any) -> None:
            await handler(job.params)

    def settings(self) -> dict[str, Any]:
        return {
            "version": ferroq.__version__,
            "bulk_api": "App.create_jobs (one round trip per call)",
            "worker": f"App(concurrency={self.concurrency}, queues={{'bench': {QUEUE_LIMIT}}}).start()"
            f" (prefetch {self.app.prefetch})",
            "database_url": self.dsn,
            "blocking": "queues k0..k999 not listed in queues= (blocking FIFO queues)",
        }

    async def setup(self) -> None:
        self.app.migrate()

    async def open(self) -> None:
        pass

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        if self.mode == "blocking":
            return [{"queue": p["k"], "action": "noop", "params": p} for p in params]
        return [{"queue": "bench", "action": "noop", "params": p} for p in params]

    async def enqueue_batch(self, batch: Any) -> None:
        self.app.create_jobs(batch)

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        self.app.create_job("bench", "noop", params)

    async def start_worker(self) -> None:
        self.app.start()

    async def stop_worker(self) -> None:
        self.app.stop(10)

    async def close(self) -> None:
        self.app.close()
