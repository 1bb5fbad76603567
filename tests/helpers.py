"""Helpers for the behaviour suite: bounded waits, run recorders, the SQL ledger, subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from psycopg.rows import dict_row

TESTS_DIR = Path(__file__).resolve().parent

#: Every job state the contract names.
ALL_STATES = ("scheduled", "available", "running", "retryable", "completed", "failed", "discarded")
#: States a job never leaves on its own.
FINAL_STATES = ("completed", "failed", "discarded")


# --- waiting -------------------------------------------------------------------------------


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Poll ``pred`` until it returns a truthy value (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"timed out after {timeout}s waiting for {text or getattr(pred, '__name__', pred)}"
                f" (last value: {value!r})"
            )
        time.sleep(interval)


def stays_true(pred: Callable[[], Any], duration: float, interval: float = 0.05) -> bool:
    """True if ``pred`` holds at every check during ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not pred():
            return False
        time.sleep(interval)
    return bool(pred())


def wait_for_job(app, job_id: int, states: str | Iterable[str], timeout: float = 10.0):
    """Wait until ``app.get_job(job_id).state`` is one of ``states``; return the job."""
    wanted = (states,) if isinstance(states, str) else tuple(states)
    last: list = [None]

    def check():
        job = app.get_job(job_id)
        last[0] = job
        return job if job is not None and job.state in wanted else None

    return wait_until(
        check,
        timeout=timeout,
        message=lambda: f"job {job_id} to reach {wanted}; last seen "
        f"{None if last[0] is None else (last[0].state, last[0].attempts, last[0].error)}",
    )


def wait_for_jobs(app, job_ids: Iterable[int], states: str | Iterable[str], timeout: float = 10.0):
    """Wait until every job of ``job_ids`` is in one of ``states``; return them in order."""
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    return [wait_for_job(app, i, states, max(0.1, deadline - time.monotonic())) for i in ids]


def seconds(a, b) -> float:
    """``b - a`` in seconds for two datetimes."""
    return (b - a).total_seconds()


# --- in-process run recorder ---------------------------------------------------------------


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
            self.max_by_queue[job.queue] = max(
                self.max_by_queue[job.queue], self.running_by_queue[job.queue]
            )
            self.events.append(
                dict(kind="start", job_id=job.id, queue=job.queue, attempts=job.attempts,
                     t=time.monotonic(), **extra)
            )

    def finish(self, job, **extra) -> None:
        with self._lock:
            self.running -= 1
            self.running_by_queue[job.queue] -= 1
            self.events.append(
                dict(kind="finish", job_id=job.id, queue=job.queue, attempts=job.attempts,
                     t=time.monotonic(), **extra)
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
            return [e for e in self.events
                    if e["kind"] == kind and (job_id is None or e["job_id"] == job_id)]

    def starts(self, job_id: int | None = None) -> list[dict]:
        return self._select("start", job_id)

    def finishes(self, job_id: int | None = None) -> list[dict]:
        return self._select("finish", job_id)

    def count(self, job_id: int) -> int:
        return len(self.starts(job_id))

    def order(self) -> list[int]:
        """Job ids in the order their runs started (a retried job appears once per run)."""
        return [e["job_id"] for e in self.starts()]


# --- database inspection -------------------------------------------------------------------


def job_row(db, job_id: int) -> dict | None:
    """The raw ``ferroq_jobs`` row of ``job_id`` as a dict, or None."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM ferroq_jobs WHERE id = %s", (job_id,))
        return cur.fetchone()


def count_jobs(db) -> int:
    """Number of rows in ``ferroq_jobs`` (all scopes)."""
    return db.execute("SELECT count(*) FROM ferroq_jobs").fetchone()[0]


def db_now(db):
    """The database clock."""
    return db.execute("SELECT now()").fetchone()[0]


class Ledger:
    """The ``ledger`` table written by ``tests/apps`` performers: one row per start/finish.

    Timestamps come from the database clock (``clock_timestamp()``), so rows written by
    several processes can be compared.
    """

    DDL = """
        CREATE TABLE IF NOT EXISTS ledger (
            id      bigserial PRIMARY KEY,
            job_id  bigint      NOT NULL,
            queue   text        NOT NULL,
            attempt integer     NOT NULL,
            pid     integer     NOT NULL,
            event   text        NOT NULL,
            at      timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """

    def __init__(self, db) -> None:
        self.db = db

    @classmethod
    def create(cls, db) -> "Ledger":
        db.execute(cls.DDL)
        return cls(db)

    def rows(self, event: str | None = None, job_id: int | None = None) -> list[dict]:
        sql = "SELECT * FROM ledger WHERE (%(e)s::text IS NULL OR event = %(e)s)" \
              " AND (%(j)s::bigint IS NULL OR job_id = %(j)s) ORDER BY at, id"
        with self.db.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, {"e": event, "j": job_id})
            return cur.fetchall()

    def starts(self, job_id: int | None = None) -> list[dict]:
        return self.rows("start", job_id)

    def finishes(self, job_id: int | None = None) -> list[dict]:
        return self.rows("finish", job_id)

    def overlaps(self) -> list[tuple]:
        """Pairs of distinct jobs of one queue whose runs intersect in time.

        A run lasts from its start row to the finish row of the same job, attempt and pid
        (forever if it never finished).
        """
        sql = """
            WITH runs AS (
                SELECT s.job_id, s.queue, s.at AS started,
                       (SELECT min(f.at) FROM ledger f
                         WHERE f.event = 'finish' AND f.job_id = s.job_id
                           AND f.attempt = s.attempt AND f.pid = s.pid) AS finished
                  FROM ledger s WHERE s.event = 'start'
            )
            SELECT a.queue, a.job_id, b.job_id
              FROM runs a JOIN runs b
                ON a.queue = b.queue AND a.job_id < b.job_id
               AND a.started < coalesce(b.finished, 'infinity')
               AND b.started < coalesce(a.finished, 'infinity')
        """
        return self.db.execute(sql).fetchall()


# --- subprocesses --------------------------------------------------------------------------


def subprocess_env(database_url: str | None = None, **extra: Any) -> dict:
    """Environment for a child Python: ``tests/`` importable, the test's database URL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    if database_url is not None:
        env["FERROQ_DATABASE_URL"] = database_url
    for key, value in extra.items():
        env[key] = str(value)
    return env


def ferroq_cli(*args: str, database_url: str | None = None, timeout: float = 60.0,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m ferroq *args`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "ferroq", *args],
        env=env or subprocess_env(database_url),
        cwd=str(TESTS_DIR),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ProcessGroup:
    """Subprocesses of one test, logging to files under the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = Path(tmp_path)
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], env: dict, name: str = "proc") -> subprocess.Popen:
        log = self.dir / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env=env, cwd=str(TESTS_DIR), stdout=out,
                                    stderr=subprocess.STDOUT)
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def worker(self, target: str, database_url: str, *args: str, **env: Any) -> subprocess.Popen:
        """Start ``python -m ferroq worker target *args`` with ``FERROQ_DATABASE_URL`` set."""
        return self.spawn(
            [sys.executable, "-m", "ferroq", "worker", target, *args],
            subprocess_env(database_url, **env),
            name="worker",
        )

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        try:
            return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        except OSError:
            return ""

    def describe(self) -> str:
        return "\n".join(
            f"--- pid {p.pid} rc={p.poll()} ---\n{self.output(p)[-4000:]}" for p in self.procs
        )

    def signal(self, proc: subprocess.Popen, sig: int) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
