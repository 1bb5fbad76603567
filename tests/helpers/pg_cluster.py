"""A throwaway PostgreSQL cluster, for fault tests that stop, kill or restart the server.

The machine's shared server is never touched: each cluster lives in its own temporary
directory, listens on loopback on a free port, and is stopped and removed by ``close()``.
When the tests run as root, the server runs as the ``postgres`` user (``initdb`` refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for directory in reversed(candidates):
        if os.path.exists(os.path.join(directory, "initdb")):
            return directory
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("initdb not found: install PostgreSQL's server package")
    return os.path.dirname(found)


class PgCluster:
    """``start``/``stop``/``restart`` a private cluster; ``url`` is its ``test`` database."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ferroq-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-N")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                # Durability is not what these tests are about; startup after a crash is.
                "fsync = off\nmax_connections = 200\nshared_buffers = 32MB\n"
            )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE test")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bindir, tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no checkpoint, clients cut off)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    def is_up(self) -> bool:
        return self._run("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def ferroq_connections(self) -> int:
        return self.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ferroq'")[0][0]

    def terminate_ferroq_connections(self) -> int:
        """Kill every backend serving ferroq, as an administrator's pg_terminate_backend does."""
        rows = self.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'ferroq' AND pid <> pg_backend_pid()"
        )
        return rows[0][0]

    def wait_until_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.is_up():
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
