"""In-process run recorder: which performers ran, in what order, how many at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager


class Recorder:
    """Thread-safe log of performer runs in this process, with concurrency counters.

    Times are ``time.monotonic()``; use them to order events, never to assert speed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self.running = 0
        self.max_running = 0
        self.running_by_queue: Counter = Counter()
        self.max_by_queue: Counter = Counter()

    def start(self, job, **extra) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.running_by_queue[job.queue] += 1
            self.max_by_queue[job.queue] = max(self.max_by_queue[job.queue], self.running_by_queue[job.queue])
            self.events.append(
                dict(kind="start", job_id=job.id, queue=job.queue, attempts=job.attempts, t=time.monotonic(), **extra)
            )

    def finish(self, job, **extra) -> None:
        with self._lock:
            self.running -= 1
            self.running_by_queue[job.queue] -= 1
            self.events.append(
                dict(kind="finish", job_id=job.id, queue=job.queue, attempts=job.attempts, t=time.monotonic(), **extra)
            )

    @contextmanager
    def run(self, job, **extra):
        """Record a start now and a finish when the block exits, however it exits."""
        self.start(job, **extra)
        try:
            yield
        finally:
            self.finish(job)

    def _select(self, kind: str, job_id: int | None) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["kind"] == kind and (job_id is None or e["job_id"] == job_id)]

    def starts(self, job_id: int | None = None) -> list[dict]:
        return self._select("start", job_id)

    def finishes(self, job_id: int | None = None) -> list[dict]:
        return self._select("finish", job_id)

    def count(self, job_id: int) -> int:
        return len(self.starts(job_id))

    def order(self) -> list[int]:
        """Job ids in the order their runs started (a retried job appears once per run)."""
        return [e["job_id"] for e in self.starts()]
