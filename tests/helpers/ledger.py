"""The SQL ledger that worker processes in ``tests/apps`` write their starts and finishes to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from .rawdb import RawDb, backend_of, sqlite_path


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

    def record_death(self, pid: int) -> None:
        """Note that process ``pid`` was killed now: its unfinished runs end here."""
        self.db.execute(
            "INSERT INTO ledger (job_id, queue, attempt, pid, event, at)"
            f" VALUES (0, '', 0, %s, 'died', {self.db.now_sql})",
            (pid,),
        )

    def _runs_sql(self) -> str:
        """Every run: from its start row to the finish row of the same job, attempt and pid,
        or to its process's death, or forever."""
        t = self.order
        return f"""
            SELECT s.id AS run, s.job_id, s.queue, s.attempt, s.pid, s.{t} AS started,
                   coalesce((SELECT min(f.{t}) FROM ledger f
                              WHERE f.event = 'finish' AND f.job_id = s.job_id
                                AND f.attempt = s.attempt AND f.pid = s.pid),
                            (SELECT min(d.{t}) FROM ledger d
                              WHERE d.event = 'died' AND d.pid = s.pid AND d.{t} >= s.{t})) AS finished
              FROM ledger s WHERE s.event = 'start'
        """

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

    def same_job_overlaps(self) -> list[tuple]:
        """Runs of one job (by different attempts or processes) that intersect in time: the
        one thing at-least-once delivery must never allow while a performer still runs."""
        inf = self.db.infinity_sql
        sql = f"""
            WITH runs AS ({self._runs_sql()})
            SELECT a.job_id, a.attempt, a.pid, b.attempt, b.pid
              FROM runs a JOIN runs b ON a.job_id = b.job_id AND a.run < b.run
               AND a.started < coalesce(b.finished, {inf})
               AND b.started < coalesce(a.finished, {inf})
        """
        return [tuple(r) for r in self.db.execute(sql).fetchall()]

    def finished_jobs(self) -> set[int]:
        """Jobs with at least one finished run."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT job_id FROM ledger WHERE event = 'finish'").fetchall()}

    def overlaps(self, same_queue: bool = True) -> list[tuple]:
        """Pairs of distinct jobs (of one queue, unless ``same_queue=False``) whose runs
        intersect in time.

        A run lasts from its start row to the finish row of the same job, attempt and pid, or
        to the death of its process (``record_death``), or forever.
        """
        inf = self.db.infinity_sql
        sql = f"""
            WITH runs AS ({self._runs_sql()})
            SELECT a.queue, a.job_id, b.job_id
              FROM runs a JOIN runs b
                ON {"a.queue = b.queue AND" if same_queue else ""} a.job_id < b.job_id
               AND a.started < coalesce(b.finished, {inf})
               AND b.started < coalesce(a.finished, {inf})
        """
        return [tuple(r) for r in self.db.execute(sql).fetchall()]
