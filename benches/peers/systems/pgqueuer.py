"""pgqueuer with asyncpg (one connection per process, as its docs and CLI do)."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from typing import Any

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

DEFAULT_CONCURRENCY = 1000  # run.py always sends the concurrency of the scenario


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        self.dsn, self.mode, self.keys, self.handler = dsn, mode, keys, handler
        # Worker concurrency: max_concurrent_tasks; jobs fetched per dequeue round trip
        # follow it (at most half of it, never above pgqueuer's default-sized 100).
        self.concurrency = concurrency
        self.batch_size = min(100, max(1, concurrency // 2))
        self.conn = None
        self.queries = None
        self.qm = None
        self.task = None

    def settings(self) -> dict[str, Any]:
        return {
            "version": version("pgqueuer"),
            "bulk_api": "Queries.enqueue(list of entrypoints, payloads, priorities) over asyncpg",
            "worker": f"QueueManager.run(batch_size={self.batch_size}, max_concurrent_tasks={self.concurrency}), "
            "continuous mode, AsyncpgDriver(one connection)",
            "blocking": "one entrypoint per key (k0..k999), each with concurrency_limit=1 (enforced in SQL)",
        }

    async def _connect(self) -> None:
        if self.conn is None:
            self.conn = await asyncpg.connect(self.dsn)
            self.queries = Queries(AsyncpgDriver(self.conn))

    async def setup(self) -> None:
        await self._connect()
        await self.queries.install()

    async def open(self) -> None:
        await self._connect()

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        if self.mode == "blocking":
            entrypoints = [p["k"] for p in params]
        else:
            entrypoints = ["noop"] * len(params)
        payloads = [json.dumps(p).encode() for p in params]
        return entrypoints, payloads, [0] * len(params)

    async def enqueue_batch(self, batch: Any) -> None:
        await self.queries.enqueue(*batch)

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        await self.queries.enqueue("noop", json.dumps(params).encode())

    async def start_worker(self) -> None:
        await self._connect()
        self.qm = QueueManager(self.queries)
        handler = self.handler

        async def noop(job: Any) -> None:
            await handler(job.payload)

        if self.mode == "blocking":
            for k in range(self.keys):
                self.qm.entrypoint(f"k{k}", concurrency_limit=1)(noop)
        else:
            self.qm.entrypoint("noop")(noop)
        self.task = asyncio.create_task(self.qm.run(batch_size=self.batch_size, max_concurrent_tasks=self.concurrency))

    async def stop_worker(self) -> None:
        self.qm.shutdown.set()
        await asyncio.wait_for(self.task, 15)

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()
