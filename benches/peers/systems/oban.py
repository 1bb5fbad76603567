"""Oban for Python (OSS), psycopg 3 pool max 20. Needs Python >= 3.12."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from oban import Oban, worker
from oban.schema import install
from psycopg_pool import AsyncConnectionPool

DEFAULT_CONCURRENCY = 100  # run.py always sends the concurrency of the scenario
POOL_MAX = 20


_handler: Any = None


@worker(queue="bench")
class Noop:
    async def process(self, job: Any) -> None:
        await _handler(job.args)


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        global _handler
        # Worker concurrency: the queue's limit in Oban(queues={queue: limit}), the jobs of
        # that queue this node runs at once (OSS: a local limit).
        self.concurrency = concurrency
        if mode == "blocking":
            raise RuntimeError(
                "Oban OSS limits are per node (local_limit); a global one-at-a-time limit "
                "per queue (global_limit) is Oban Pro only"
            )
        _handler = handler
        self.dsn = dsn
        self.pool = None
        self.oban = None

    def settings(self) -> dict[str, Any]:
        return {
            "version": version("oban"),
            "bulk_api": "Oban.enqueue_many (OSS inserts one row per statement)",
            "worker": f"Oban(queues={{'bench': {self.concurrency}}}), pool max {POOL_MAX}",
            "blocking": None,
        }

    async def _pool(self) -> None:
        if self.pool is None:
            self.pool = AsyncConnectionPool(self.dsn, min_size=2, max_size=POOL_MAX, open=False)
            await self.pool.open()

    async def setup(self) -> None:
        await self._pool()
        await install(self.pool)

    async def open(self) -> None:
        await self._pool()
        self.oban = Oban(pool=self.pool)  # client mode: no queues, no leadership

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        return [Noop.new(p) for p in params]

    async def enqueue_batch(self, batch: Any) -> None:
        await self.oban.enqueue_many(batch)

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        await self.oban.enqueue(Noop.new(params))

    async def start_worker(self) -> None:
        await self._pool()
        self.oban = Oban(pool=self.pool, queues={"bench": self.concurrency})
        await self.oban.start()

    async def stop_worker(self) -> None:
        await self.oban.stop()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
