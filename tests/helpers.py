"""Helpers for the behaviour suite: bounded waits, run recorders, backend-neutral database
access (``RawDb``, ``job_row``, the SQL ledger), subprocesses."""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import psycopg

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
        message=lambda: (
            f"job {job_id} to reach {wanted}; last seen "
            f"{None if last[0] is None else (last[0].state, last[0].attempts, last[0].error)}"
        ),
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


# --- database access, backend-neutral ------------------------------------------------------

#: Columns of ``ferroq_jobs`` holding times (timestamptz on PostgreSQL, integer microseconds
#: since the Unix epoch on SQLite); ``job_row`` returns them as aware UTC datetimes on both.
TIME_COLUMNS = (
    "scheduled_at",
    "run_at",
    "attempted_at",
    "next_attempt_at",
    "done_at",
    "inserted_at",
    "lease_expires_at",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: SQLite's database clock as ferroq stamps it: integer microseconds since the Unix epoch.
SQLITE_NOW = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) * 1000 AS INTEGER)"


def backend_of(url: str) -> str:
    """``"postgres"`` or ``"sqlite"`` for a database URL."""
    return "sqlite" if url.startswith("sqlite:") else "postgres"


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///path`` URL names (SQLAlchemy style: ``////`` = absolute)."""
    assert url.startswith("sqlite:///"), url
    return url[len("sqlite:///") :].split("?", 1)[0]


def _sqlite_placeholders(sql: str) -> str:
    """psycopg placeholders to sqlite3's: ``%s`` -> ``?``, ``%(name)s`` -> ``:name``."""
    return re.sub(r"%\((\w+)\)s", r":\1", sql).replace("%s", "?")


#: A child process holding one autocommit sqlite3 connection: it runs pickled
#: ``(sql, params)`` requests from stdin and answers pickled results on stdout.
_SQLITE_SERVER = r"""
import pickle, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    try:
        sql, params = pickle.load(inp)
    except EOFError:
        break
    try:
        cur = conn.execute(sql, params)
        names = None if cur.description is None else [d[0] for d in cur.description]
        reply = ("ok", names, cur.fetchall(), cur.rowcount)
    except Exception as exc:
        reply = ("error", type(exc).__name__, str(exc))
    pickle.dump(reply, out)
    out.flush()
"""


class _Result:
    """The cursor-like answer of a proxied statement."""

    def __init__(self, names, rows, rowcount) -> None:
        self.description = None if names is None else [(n,) + (None,) * 6 for n in names]
        self._rows = list(rows)
        self.rowcount = rowcount

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


class _SqliteProxy:
    """``sqlite3`` run in a helper process, for a process that also runs ferroq's engine.

    Should ferroq's extension carry its own copy of SQLite (a bundled build), two SQLite
    copies in one process would not see each other's POSIX file locks
    (https://www.sqlite.org/howtocorrupt.html, 2.2.1). The harness's own inspection
    connection therefore never lives in the engine's process, so it cannot break the file it
    inspects whichever way the extension is built. Transactional enqueue and completion
    (``transaction_connection``) do use ``sqlite3`` in-process, as that is the product's API.
    """

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _SQLITE_SERVER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def execute(self, sql: str, params: Any = ()):
        with self._lock:
            pickle.dump((sql, tuple(params) if isinstance(params, list) else params), self._proc.stdin)
            self._proc.stdin.flush()
            try:
                reply = pickle.load(self._proc.stdout)
            except EOFError:
                raise sqlite3.OperationalError(f"the sqlite helper process exited (rc={self._proc.poll()})") from None
        if reply[0] == "error":
            raise getattr(sqlite3, reply[1], sqlite3.Error)(reply[2])
        return _Result(*reply[1:])

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()


class RawDb:
    """A raw autocommit connection to a test's database, the same to use on both backends.

    ``execute`` takes psycopg-style placeholders (``%s``, ``%(name)s``) and returns a cursor
    (``fetchone``/``fetchall``/``rowcount``/``description``); ``scalar`` and ``rows`` are
    shortcuts. Backend specific SQL lives in this class and the helpers below, never in
    tests: ``now_sql`` is the database clock (timestamptz / integer microseconds) and
    ``seconds_from_now_sql(s)`` an instant ``s`` seconds away in the same representation.

    On SQLite, ``proxy`` (default: whether ferroq is imported in this process) runs the
    connection in a helper process; see ``_SqliteProxy``.
    """

    def __init__(self, url: str, proxy: bool | None = None) -> None:
        self.url = url
        self.backend = backend_of(url)
        if self.backend == "sqlite":
            if proxy is None:
                proxy = "ferroq" in sys.modules
            if proxy:
                self.conn = _SqliteProxy(sqlite_path(url))
            else:
                # isolation_level=None: autocommit; a generous busy timeout, workers write too.
                self.conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=30, check_same_thread=False)
            self.now_sql = SQLITE_NOW
            self.infinity_sql = "9223372036854775807"
        else:
            self.conn = psycopg.connect(url, autocommit=True)
            self.now_sql = "clock_timestamp()"
            self.infinity_sql = "'infinity'::timestamptz"

    @classmethod
    def connect(cls, url: str, proxy: bool | None = None) -> RawDb:
        return cls(url, proxy)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def seconds_from_now_sql(self, seconds: float) -> str:
        seconds = float(seconds)
        if self.backend == "sqlite":
            return f"({self.now_sql} + {round(seconds * 1_000_000)})"
        return f"({self.now_sql} + make_interval(secs => {seconds!r}))"

    def execute(self, sql: str, params: Any = ()):
        if self.backend == "sqlite":
            return self.conn.execute(_sqlite_placeholders(sql), params)
        return self.conn.execute(sql, params or None)

    def scalar(self, sql: str, params: Any = ()):
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def rows(self, sql: str, params: Any = ()) -> list[dict]:
        """Every row as a dict of column name to raw value."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def to_datetime(self, value):
        """A time read from this database as an aware UTC datetime (None stays None)."""
        if value is None or isinstance(value, datetime):
            return value
        return _EPOCH + timedelta(microseconds=int(value))

    def table_names(self) -> set[str]:
        """Tables of this test's database (its schema on PostgreSQL, its file on SQLite)."""
        if self.backend == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        return {r[0] for r in self.execute(sql).fetchall()}


@contextmanager
def transaction_connection(url: str):
    """A connection in manual-commit mode that ``connection=`` / ``job.complete`` accept: a
    psycopg connection on PostgreSQL, a ``sqlite3`` connection to the same file on SQLite
    (which opens a transaction implicitly before INSERT/UPDATE). Like psycopg's own context
    manager it commits on a clean exit, rolls back on an exception, and closes."""
    if backend_of(url) == "sqlite":
        conn = sqlite3.connect(sqlite_path(url), timeout=30, check_same_thread=False)
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
    else:
        with psycopg.connect(url) as conn:
            yield conn


def execute_in(conn, sql: str, params: Any = ()):
    """Run ``sql`` (psycopg placeholders) on a connection from ``transaction_connection``."""
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(_sqlite_placeholders(sql), params)
    return conn.execute(sql, params or None)


def job_row(db: RawDb, job_id: int) -> dict | None:
    """The raw ``ferroq_jobs`` row of ``job_id`` as a dict, or None. On both backends times
    are aware UTC datetimes, ``params``/``result`` decoded JSON and ``blocking`` a bool."""
    rows = db.rows("SELECT * FROM ferroq_jobs WHERE id = %s", (job_id,))
    if not rows:
        return None
    row = rows[0]
    if db.backend == "sqlite":
        for column in TIME_COLUMNS:
            row[column] = db.to_datetime(row[column])
        for column in ("params", "result"):
            row[column] = None if row[column] is None else json.loads(row[column])
        row["blocking"] = bool(row["blocking"])
    return row


def count_jobs(db: RawDb) -> int:
    """Number of rows in ``ferroq_jobs`` (all scopes)."""
    return db.scalar("SELECT count(*) FROM ferroq_jobs")


def db_now(db: RawDb) -> datetime:
    """The database clock, as an aware UTC datetime."""
    return db.to_datetime(db.scalar(f"SELECT {db.now_sql}"))


def expire_lease(db: RawDb, job_id: int, attempts: int | None = None) -> int:
    """Make the running lease of ``job_id`` (of that attempt, if given) lapse a second ago,
    as if its worker had stopped renewing it. Returns the number of rows changed."""
    sql = f"UPDATE ferroq_jobs SET lease_expires_at = {db.seconds_from_now_sql(-1)} WHERE id = %s AND state = 'running'"
    params: tuple = (job_id,)
    if attempts is not None:
        sql += " AND attempts = %s"
        params += (attempts,)
    return db.execute(sql, params).rowcount


def lease_is_live_sql(db: RawDb) -> str:
    """SQL condition: the row's lease has not expired by the database clock."""
    return f"lease_expires_at > {db.now_sql}"


def ledger_url(database_url: str) -> str:
    """Where the ledger of a test lives: its PostgreSQL schema, or on SQLite a ``ledger.db``
    beside the jobs file. A separate file because worker processes write ledger rows with
    Python's ``sqlite3`` beside ferroq's engine (see ``_SqliteProxy``), and so that ledger
    writes never contend for the jobs file's write lock."""
    if backend_of(database_url) == "sqlite":
        return f"sqlite:///{Path(sqlite_path(database_url)).parent / 'ledger.db'}"
    return database_url


class Ledger:
    """The ``ledger`` table written by ``tests/apps`` performers: one row per start/finish.

    Timestamps come from the database clock, so rows written by several processes can be
    compared. On SQLite every write is serialised by the file's write lock, so the row id
    (AUTOINCREMENT) orders events exactly; the clock only has millisecond resolution there.
    """

    DDL: ClassVar[dict[str, str]] = {
        "postgres": """
            CREATE TABLE IF NOT EXISTS ledger (
                id      bigserial PRIMARY KEY,
                job_id  bigint      NOT NULL,
                queue   text        NOT NULL,
                attempt integer     NOT NULL,
                pid     integer     NOT NULL,
                event   text        NOT NULL,
                at      timestamptz NOT NULL DEFAULT clock_timestamp()
            )
        """,
        "sqlite": """
            CREATE TABLE IF NOT EXISTS ledger (
                id      INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id  INTEGER NOT NULL,
                queue   TEXT    NOT NULL,
                attempt INTEGER NOT NULL,
                pid     INTEGER NOT NULL,
                event   TEXT    NOT NULL,
                at      INTEGER NOT NULL
            )
        """,
    }

    def __init__(self, db: RawDb) -> None:
        self.db = db
        #: The column that orders events in time (see the class docstring).
        self.order = "id" if db.backend == "sqlite" else "at"

    @staticmethod
    def connect(database_url: str) -> RawDb:
        """A connection to the ledger of the test using ``database_url``."""
        return RawDb.connect(ledger_url(database_url), proxy=False)

    @classmethod
    def create(cls, database_url: str) -> Ledger:
        db = cls.connect(database_url)
        db.execute(cls.DDL[db.backend])
        if db.backend == "sqlite":
            db.execute("PRAGMA journal_mode = wal")  # writers in several processes
        return cls(db)

    @staticmethod
    def record(db: RawDb, job, event: str) -> None:
        """Append ``(job, event)`` (used by the performers in ``tests/apps``)."""
        db.execute(
            f"INSERT INTO ledger (job_id, queue, attempt, pid, event, at) VALUES (%s, %s, %s, %s, %s, {db.now_sql})",
            (job.id, job.queue, job.attempts, os.getpid(), event),
        )

    def rows(self, event: str | None = None, job_id: int | None = None) -> list[dict]:
        where, params = [], []
        if event is not None:
            where.append("event = %s")
            params.append(event)
        if job_id is not None:
            where.append("job_id = %s")
            params.append(job_id)
        sql = "SELECT * FROM ledger" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.rows(sql + f" ORDER BY {self.order}, id", params)
        for row in rows:
            row["at"] = self.db.to_datetime(row["at"])
        return rows

    def starts(self, job_id: int | None = None) -> list[dict]:
        return self.rows("start", job_id)

    def finishes(self, job_id: int | None = None) -> list[dict]:
        return self.rows("finish", job_id)

    def overlaps(self, same_queue: bool = True) -> list[tuple]:
        """Pairs of distinct jobs (of one queue, unless ``same_queue=False``) whose runs
        intersect in time.

        A run lasts from its start row to the finish row of the same job, attempt and pid
        (forever if it never finished).
        """
        t, inf = self.order, self.db.infinity_sql
        sql = f"""
            WITH runs AS (
                SELECT s.job_id, s.queue, s.{t} AS started,
                       (SELECT min(f.{t}) FROM ledger f
                         WHERE f.event = 'finish' AND f.job_id = s.job_id
                           AND f.attempt = s.attempt AND f.pid = s.pid) AS finished
                  FROM ledger s WHERE s.event = 'start'
            )
            SELECT a.queue, a.job_id, b.job_id
              FROM runs a JOIN runs b
                ON {"a.queue = b.queue AND" if same_queue else ""} a.job_id < b.job_id
               AND a.started < coalesce(b.finished, {inf})
               AND b.started < coalesce(a.finished, {inf})
        """
        return [tuple(r) for r in self.db.execute(sql).fetchall()]


# --- apps ------------------------------------------------------------------------------------


def close_apps(apps: list) -> None:
    """Close ``apps`` (last first) at a test's teardown, warning about (not raising) errors so
    the rest are still stopped. ``test_enqueue.py::test_close_*`` asserts that close() works."""
    for app in reversed(apps):
        try:
            app.close()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - also a Rust panic (a BaseException)
            warnings.warn(f"app.close() at teardown raised {exc!r}", stacklevel=2)
    apps.clear()
    gc.collect()  # performers closing over their app form cycles; free their connections now


# --- subprocesses --------------------------------------------------------------------------


def subprocess_env(database_url: str | None = None, **extra: Any) -> dict:
    """Environment for a child Python: ``tests/`` importable, the test's database URL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if database_url is not None:
        env["FERROQ_DATABASE_URL"] = database_url
    for key, value in extra.items():
        env[key] = str(value)
    return env


def ferroq_cli(
    *args: str, database_url: str | None = None, timeout: float = 60.0, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m ferroq *args`` and return the completed process (text output)."""
    return subprocess.run(  # noqa: PLW1510 - callers assert on the exit code
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
            proc = subprocess.Popen(args, env=env, cwd=str(TESTS_DIR), stdout=out, stderr=subprocess.STDOUT)
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
        return "\n".join(f"--- pid {p.pid} rc={p.poll()} ---\n{self.output(p)[-4000:]}" for p in self.procs)

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


def reject_job_updates(db: RawDb) -> None:
    """Make every UPDATE of ferroq_jobs fail, as a broken database would, until
    ``allow_job_updates``."""
    if db.backend == "sqlite":
        db.execute(
            "CREATE TRIGGER ferroq_test_reject BEFORE UPDATE ON ferroq_jobs "
            "BEGIN SELECT RAISE(ABORT, 'updates rejected by the test'); END"
        )
    else:
        db.execute(
            "CREATE FUNCTION ferroq_test_reject() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'updates rejected by the test'; END$$"
        )
        db.execute(
            "CREATE TRIGGER ferroq_test_reject BEFORE UPDATE ON ferroq_jobs "
            "FOR EACH ROW EXECUTE FUNCTION ferroq_test_reject()"
        )


def allow_job_updates(db: RawDb) -> None:
    if db.backend == "sqlite":
        db.execute("DROP TRIGGER ferroq_test_reject")
    else:
        db.execute("DROP TRIGGER ferroq_test_reject ON ferroq_jobs")
        db.execute("DROP FUNCTION ferroq_test_reject()")
