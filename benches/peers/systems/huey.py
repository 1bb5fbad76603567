"""huey (SqliteHuey): the SQLite peer. Only in the sqlite-* scenarios.

`dsn` is `sqlite:///<dir>/huey.db?synchronous=full|normal` (run.py's convention, the same
form as ferroq's SQLite URL). huey's SqliteStorage opens its file in WAL mode by default
(`journal_mode='wal'`) and leaves `synchronous` at SQLite's default (FULL, 2) unless given
`fsync=True` (FULL) or `fsync=False` (OFF); NORMAL has no option, so the storage class below
sets the pragma on every connection it opens, to exactly what was asked for, and settings()
reads it back from huey's own connection.

The consumer runs in this process: `huey.create_consumer(workers=c, worker_type='thread')`,
so c worker threads; huey's storage shares one sqlite3 connection between them (under a
lock), which is how SqliteHuey works. huey refuses `async def` tasks: the task is a plain
function calling agent.on_job_sync, the same body as the other systems' handler.
"""

from __future__ import annotations

import asyncio
import sqlite3
from importlib.metadata import version
from typing import Any
from urllib.parse import parse_qs

from huey import SqliteHuey
from huey.storage import SqliteStorage

DEFAULT_CONCURRENCY = 10
SYNC_VALUES = {"full": 2, "normal": 1}


def parse(dsn: str) -> tuple[str, str]:
    """The path and synchronous setting of a URL read the way ferroq reads it:
    `sqlite:///rel/path.db`, `sqlite:////abs/path.db`, then `?synchronous=...`."""
    if not dsn.startswith("sqlite://"):
        raise RuntimeError("huey takes part only in the sqlite-* scenarios")
    rest, _, query = dsn[len("sqlite://") :].partition("?")
    path = rest[1:] if rest.startswith("/") else rest
    sync = parse_qs(query).get("synchronous", ["full"])[0].lower()
    if sync not in SYNC_VALUES:
        raise ValueError(f"synchronous={sync!r}: full or normal")
    return path, sync


class System:
    def __init__(self, dsn: str, *, mode: str, keys: int, handler: Any, concurrency: int) -> None:
        if mode not in ("drain", "latency"):
            raise RuntimeError(f"huey: no {mode} scenario (it runs the sqlite-* scenarios only)")
        self.path, self.sync = parse(dsn)
        self.concurrency = concurrency
        sync_value = SYNC_VALUES[self.sync]

        class Storage(SqliteStorage):
            def _create_connection(self) -> sqlite3.Connection:
                conn = super()._create_connection()
                conn.execute(f"pragma synchronous={sync_value}")
                return conn

        # journal_mode='wal' is huey's default, spelled out; fsync=None: the pragma is set
        # by Storage above instead.
        self.huey = SqliteHuey("bench", filename=self.path, journal_mode="wal", storage_class=Storage)
        sync_handler = handler.sync

        @self.huey.task(name="noop")
        def noop(params: dict[str, Any]) -> None:
            sync_handler(params)

        self.noop = noop
        self.consumer = None

    def settings(self) -> dict[str, Any]:
        conn = self.huey.storage.conn
        journal = conn.execute("pragma journal_mode").fetchone()[0]
        sync = conn.execute("pragma synchronous").fetchone()[0]
        return {
            "version": version("huey"),
            "bulk_api": "none in huey: the prefill inserts huey's own serialized messages "
            "(huey.serialize_task) into its task table in one transaction per batch (not timed)",
            "single_api": "calling the task: noop(params) -> Huey.enqueue -> one INSERT, committed",
            "worker": f"huey.create_consumer(workers={self.concurrency}, worker_type='thread', periodic=False, "
            "check_worker_health=False) in this process, huey's default polling "
            "(initial_delay 0.1 s, backoff 1.15, max_delay 10 s)",
            "storage": f"SqliteHuey(filename=..., journal_mode='wal'); PRAGMA journal_mode={journal}, "
            f"PRAGMA synchronous={sync} (2 FULL, 1 NORMAL) on huey's connection",
            "synchronous": self.sync,
            "sqlite_version": sqlite3.sqlite_version,
            "blocking": None,
        }

    async def setup(self) -> None:
        pass  # SqliteHuey creates its tables when constructed

    async def open(self) -> None:
        pass

    def prepare_batch(self, params: list[dict[str, Any]]) -> Any:
        return [self.huey.serialize_task(self.noop.s(p)) for p in params]

    async def enqueue_batch(self, batch: Any) -> None:
        storage = self.huey.storage
        with storage.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [(storage.name, storage.to_blob(data), 0) for data in batch],
            )

    async def enqueue_one(self, params: dict[str, Any]) -> None:
        self.noop(params)

    async def start_worker(self) -> None:
        # In the main thread: Consumer.start() installs signal handlers.
        self.consumer = self.huey.create_consumer(
            workers=self.concurrency, worker_type="thread", periodic=False, check_worker_health=False
        )
        self.consumer.start()

    async def stop_worker(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await asyncio.to_thread(consumer.stop, True)

    async def close(self) -> None:
        self.huey.storage.close()
