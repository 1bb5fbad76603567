"""Apps and subprocesses of a test: teardown of apps, child Python environments, the CLI,
worker processes killed at teardown."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from .paths import TESTS_DIR


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
