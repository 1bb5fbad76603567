"""awa (awa-pg): Rust core + PyO3, queue-storage engine."""

from __future__ import annotations

import dataclasses
from importlib.metadata import version
from typing import Any

import awa

DEFAULT_CONCURRENCY = 256  # run.py always sends the concurrency of the scenario
POLL_INTERVAL_MS = 50


@dataclasses.dataclass
class Noop:
    i: int = 0
    t: int = 0
    seq: int = 0


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        # Worker concurrency: the queue's max_workers in start([(queue, max_workers)]), the
        # jobs of that queue one client runs at once (global_max_workers left unset).
        self.concurrency = concurrency
        if mode == "blocking":
            raise RuntimeError("awa has no per-key 'one running job at a time' guarantee")
        self.client = awa.AsyncClient(dsn)

        @self.client.task(Noop, queue="bench")
        async def noop(job: Any) -> None:
            await handler(job.args)

    def settings(self) -> dict[str, Any]:
        return {
            "version": version("awa-pg"),
            "bulk_api": "AsyncClient.enqueue_many_copy (COPY into queue storage)",
            "worker": f"start([('bench', {self.concurrency})], poll_interval_ms={POLL_INTERVAL_MS}), "
            "queue-storage engine",
            "blocking": None,
        }

    async def setup(self) -> None:
        await self.client.migrate()
        await self.client.install_queue_storage()

    async def open(self) -> None:
        pass

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        return [Noop(**p) for p in params]

    async def enqueue_batch(self, batch: Any) -> None:
        await self.client.enqueue_many_copy(batch, queue="bench")

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        await self.client.insert(Noop(**params), queue="bench")

    async def start_worker(self) -> None:
        await self.client.start([("bench", self.concurrency)], poll_interval_ms=POLL_INTERVAL_MS)

    async def stop_worker(self) -> None:
        await self.client.shutdown(10_000)

    async def close(self) -> None:
        await self.client.close()
