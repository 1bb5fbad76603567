"""procrastinate with its psycopg 3 connector (pool max 20)."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import procrastinate

DEFAULT_CONCURRENCY = 100  # run.py always sends the concurrency of the scenario
POOL_MAX = 20


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        self.mode = mode
        # Worker concurrency: run_worker_async(concurrency=...), the number of jobs one worker
        # runs at once (procrastinate >= 3: asyncio tasks in one process).
        self.concurrency = concurrency
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=POOL_MAX)
        )

        @self.app.task(name="noop", queue="bench")
        async def noop(**params: Any) -> None:
            await handler(params)

        self.noop = noop
        self.opened = False
        self.task = None

    def settings(self) -> dict[str, Any]:
        return {
            "version": version("procrastinate"),
            "bulk_api": "Task.batch_defer_async (blocking: JobManager.batch_defer_jobs_async with lock= per job)",
            "worker": f"run_worker_async(concurrency={self.concurrency}, wait=True, listen_notify=True), "
            f"pool max {POOL_MAX}, delete_jobs default (never)",
            "blocking": "lock='k<n>' per job: no two jobs with the same lock run at once",
        }

    async def _open(self) -> None:
        if not self.opened:
            await self.app.open_async()
            self.opened = True

    async def setup(self) -> None:
        await self._open()
        await self.app.schema_manager.apply_schema_async()

    async def open(self) -> None:
        await self._open()

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        if self.mode == "blocking":
            base = self.noop.configure().job
            return [base.evolve(task_kwargs=p, lock=p["k"]) for p in params]
        return params

    async def enqueue_batch(self, batch: Any) -> None:
        if self.mode == "blocking":
            await self.app.job_manager.batch_defer_jobs_async(batch)
        else:
            await self.noop.batch_defer_async(*batch)

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        await self.noop.defer_async(**params)

    async def start_worker(self) -> None:
        await self._open()
        self.task = asyncio.create_task(
            self.app.run_worker_async(
                queues=["bench"], concurrency=self.concurrency, wait=True, install_signal_handlers=False
            )
        )

    async def stop_worker(self) -> None:
        self.task.cancel()
        try:
            await asyncio.wait_for(self.task, 15)
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        if self.opened:
            await self.app.close_async()
            self.opened = False
