"""Backend-neutral database access for assertions: ``RawDb`` (autocommit inspection with
psycopg-style SQL on both backends), job rows, the caller-transaction connections."""

from __future__ import annotations

import json
import pickle
import re
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

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
