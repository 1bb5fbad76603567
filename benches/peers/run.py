#!/usr/bin/env python3
"""Side-by-side benchmark: ferroq and its PostgreSQL peers on one local server, and ferroq and
huey on SQLite files.

    python benches/peers/run.py                       # everything, N=20,000, 3 runs
    python benches/peers/run.py --only ferroq,pgqueuer --scenario drain,latency --runs 1
    python benches/peers/run.py --scenario drain,io --concurrency 100
    python benches/peers/run.py --only ferroq,huey --scenario sqlite-drain --sqlite-sync normal,full

See README.md beside this file for what each scenario and column means.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import queue
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
VENVS = os.path.join(HERE, ".venvs")
RESULTS = os.path.join(HERE, "results")
AGENT = os.path.join(HERE, "agent.py")
SQLITE_DIR = os.path.join(HERE, ".sqlite")  # the SQLite scenarios' files (gitignored), same disk as the repo
SQL_DIR = os.path.join(HERE, "sql")
PSYCOPG_PIN = "psycopg[binary]==3.3.9"

PY311 = "python3.11"
PY312_DEFAULT = "/root/.pyenv/versions/3.12.1/bin/python"

# The io scenario: every job awaits asyncio.sleep(IO_SLEEP) at IO_CONCURRENCY jobs in flight,
# so no system can exceed IO_CONCURRENCY / IO_SLEEP jobs/s.
IO_SLEEP = 0.005
IO_CONCURRENCY = 100
IO_LIMIT = IO_CONCURRENCY / IO_SLEEP

# ferroq's SQLite URL in the sqlite-* scenarios. `?synchronous=` is used only when this ferroq
# understands it (probed at start, see probe_ferroq_sqlite_sync); until then ferroq runs at its
# built-in WAL + synchronous=NORMAL, and so does huey.
FERROQ_SQLITE_URL = "sqlite:///{path}?synchronous={sync}"
FERROQ_SQLITE_URL_FIXED = "sqlite:///{path}"
# huey's URL: the same form, read by systems/huey.py.
HUEY_SQLITE_URL = "sqlite:///{path}?synchronous={sync}"

# Per system: interpreter, the SQL that counts jobs not yet finished ("done" when it
# returns 0), the SQL that counts successful completions (a check), and blocking support.
SYSTEMS: dict[str, dict[str, Any]] = {
    "ferroq": {
        "python": "3.11",
        "open_sql": "SELECT count(*) FROM ferroq_jobs WHERE state NOT IN ('completed','failed','discarded')",
        "completed_sql": "SELECT count(*) FROM ferroq_jobs WHERE state = 'completed'",
        "blocking": None,
    },
    "pgqueuer": {
        "python": "3.11",
        "open_sql": "SELECT count(*) FROM pgqueuer",
        # Finished jobs are deleted (their log rows are later folded into statistics).
        "completed_sql": None,
        "blocking": None,
    },
    "procrastinate": {
        "python": "3.11",
        "open_sql": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo','doing')",
        "completed_sql": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        "blocking": None,
    },
    "awa": {
        "python": "3.11",
        # The awa.jobs view rebuilds every job's row from the queue-storage segments (0.1-0.4 s
        # at 20,000 jobs): too slow to poll. Polled instead: N minus the terminal records
        # (done_entries rows + receipt_completion_batches items, less tombstoned items), which is
        # how that view derives completed jobs. The view itself checks the result at the end.
        "open_sql": "SELECT {n}::bigint - (SELECT count(*) FROM awa.done_entries)"
        " - (SELECT coalesce(sum(cardinality(job_ids)), 0) FROM awa.receipt_completion_batches)"
        " + (SELECT count(*) FROM awa.receipt_completion_tombstones)",
        "count_sql": "SELECT count(*) FROM awa.jobs WHERE state NOT IN ('completed','failed','cancelled')",
        "completed_sql": "SELECT count(*) FROM awa.jobs WHERE state = 'completed'",
        "blocking": "no equivalent: ordering_key only orders claims, per-queue max_workers is per process",
    },
    "oban": {
        "python": "3.12",
        "open_sql": "SELECT count(*) FROM oban_jobs WHERE state IN ('available','scheduled','executing','retryable')",
        "completed_sql": "SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
        "blocking": "no equivalent in OSS: queue limits are per node; global_limit is Oban Pro",
    },
    # The SQLite peer: only in the sqlite-* scenarios (ferroq takes part in all).
    "huey": {
        "python": "3.11",
        "sqlite_only": True,
        "blocking": "SQLite peer: sqlite-* scenarios only",
    },
}
# On SQLite (sqlite-* scenarios): the file name, the "done" query (0 = drained; the handlers
# must also all have returned, see agent._finished) and the completed-count check.
SQLITE_SYSTEMS: dict[str, dict[str, Any]] = {
    "ferroq": {
        "file": "ferroq.db",
        "open_sql": "SELECT count(*) FROM ferroq_jobs WHERE state NOT IN ('completed','failed','discarded')",
        "completed_sql": "SELECT count(*) FROM ferroq_jobs WHERE state = 'completed'",
    },
    "huey": {
        "file": "huey.db",
        # huey deletes a task's row when a worker dequeues it, before running it.
        "open_sql": "SELECT count(*) FROM task",
        "completed_sql": None,
    },
}
ORDER = list(SYSTEMS)
PG_SCENARIOS = ["enqueue", "drain", "io", "latency", "blocking"]
SQLITE_SCENARIOS = ["sqlite-enqueue", "sqlite-drain", "sqlite-latency"]
SCENARIOS = [*PG_SCENARIOS, *SQLITE_SCENARIOS, "ceiling"]

_children: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- bootstrap: the harness itself needs psycopg -----------------------------------------------


def ensure_harness_python() -> None:
    try:
        import psycopg  # noqa: F401

        return
    except ImportError:
        pass
    venv = os.path.join(VENVS, "harness")
    python = os.path.join(venv, "bin", "python")
    if os.environ.get("FERROQ_PEERS_HARNESS") == "1":
        sys.exit("the harness virtualenv has no psycopg; delete benches/peers/.venvs/harness and retry")
    if not os.path.exists(python):
        log("creating the harness virtualenv (.venvs/harness, psycopg)")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", PSYCOPG_PIN], check=True)
    os.environ["FERROQ_PEERS_HARNESS"] = "1"
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


# -- virtualenvs ---------------------------------------------------------------------------------


def file_hash(*paths: str) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def base_python(system: str, args: argparse.Namespace) -> str:
    if SYSTEMS[system]["python"] == "3.12":
        candidates = [args.python312, PY312_DEFAULT, "python3.12", "python3.13"]
    else:
        candidates = [args.python311, PY311, "python3"]
    for c in candidates:
        if not c:
            continue
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.path.exists(path):
            return path
    raise RuntimeError(f"no Python {SYSTEMS[system]['python']} found for {system} (see --python311/--python312)")


def ferroq_source(args: argparse.Namespace) -> tuple[str, str]:
    """Where to build ferroq from, and a stamp that changes when that source changes.

    Default: the working tree of this repository, as it is (uncommitted edits included).
    With --ferroq-ref REF: that commit, exported with `git archive` into .venvs/ferroq-src."""
    git = ["git", "-C", REPO]
    if args.ferroq_ref:
        sha = subprocess.run(
            [*git, "rev-parse", "--verify", args.ferroq_ref + "^{commit}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        src = os.path.join(VENVS, "ferroq-src")
        marker = os.path.join(src, ".bench-commit")
        if not (os.path.exists(marker) and open(marker).read() == sha):
            shutil.rmtree(src, ignore_errors=True)
            os.makedirs(src)
            archive = subprocess.run([*git, "archive", "--format=tar", sha], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
            with open(marker, "w") as f:
                f.write(sha)
        return src, "ref:" + sha
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(
        [*git, "diff", "HEAD", "--", "rust", "python", "migrations", "Cargo.toml", "Cargo.lock", "pyproject.toml"],
        capture_output=True,
        text=True,
    ).stdout
    return REPO, "tree:" + head + ":" + hashlib.sha256(diff.encode()).hexdigest()[:16]


def ensure_venv(system: str, args: argparse.Namespace) -> str:
    venv = os.path.join(VENVS, system)
    python = os.path.join(venv, "bin", "python")
    stamp_file = os.path.join(venv, ".bench-stamp")
    if system == "ferroq":
        if args.ferroq_python:
            return args.ferroq_python
        src, stamp = ferroq_source(args)
    else:
        stamp = "req:" + file_hash(os.path.join(HERE, f"requirements-{system}.txt"))
    current = open(stamp_file).read() if os.path.exists(stamp_file) else None
    if current == stamp and os.path.exists(python):
        return python
    if not os.path.exists(python):
        log(f"creating {os.path.relpath(venv, REPO)}")
        subprocess.run([base_python(system, args), "-m", "venv", venv], check=True)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if system == "ferroq":
        log(f"building ferroq (release) from {src} into .venvs/ferroq ({stamp})")
        # A private cargo target directory: the build neither disturbs nor races with a
        # developer's own builds in target/.
        env = {**os.environ, "CARGO_TARGET_DIR": os.path.join(VENVS, "ferroq-target")}
        subprocess.run([*pip, "--force-reinstall", "--no-deps", src], check=True, env=env)
    else:
        log(f"installing requirements-{system}.txt")
        subprocess.run([*pip, "-r", os.path.join(HERE, f"requirements-{system}.txt")], check=True)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    return python


def pip_freeze(python: str) -> list[str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


# -- PostgreSQL ----------------------------------------------------------------------------------


class Pg:
    def __init__(self, base: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.base = base.rstrip("/")
        self.admin = psycopg.connect(f"{self.base}/postgres", autocommit=True)

    def dsn(self, db: str) -> str:
        return f"{self.base}/{db}"

    def recreate(self, db: str) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.admin.execute(f'CREATE DATABASE "{db}"')

    def drop(self, db: str) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def connect(self, db: str) -> Any:
        return self.psycopg.connect(self.dsn(db), autocommit=True)

    def quiesce(self, db: str) -> None:
        """Before every timed phase: no system gets a warmer or cleaner database than another."""
        with self.connect(db) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
            conn.execute("SELECT pg_stat_reset()")

    def scalar(self, sql: str) -> Any:
        return self.admin.execute(sql).fetchone()[0]


# -- CPU counters --------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _cpu_by_pid() -> dict[int, tuple[float, str]]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            out[int(name)] = (proc_cpu_seconds(int(name)), cmd)
        except (OSError, IndexError, ValueError):
            pass
    return out


class OtherCpu:
    """CPU used during a timed phase by processes that are not part of it: not the worker, the
    harness, the PostgreSQL backends of the bench database or PostgreSQL's own background
    processes. It is an estimate (processes that ended inside the window are unseen, and so
    counted as other), used only to flag runs disturbed by another user of the machine."""

    def __init__(self, db: str, *pids: int) -> None:
        self.db, self.pids = db, {os.getpid(), *pids}
        self.m0, self.before, self.t0 = machine_busy_seconds(), _cpu_by_pid(), time.perf_counter()

    def ours(self, pid: int, cmd: str) -> bool:
        if pid in self.pids:
            return True
        if cmd.startswith("postgres:"):
            client = "(" in cmd or "[local]" in cmd  # a client backend: "postgres: 15/main: user db host(port) ..."
            return (not client) or f" {self.db} " in cmd
        return cmd.startswith("/usr/lib/postgresql/")  # the postmaster

    def share(self) -> float:
        """Other processes' CPU over the window, as a share of the whole machine."""
        elapsed = time.perf_counter() - self.t0
        machine = machine_busy_seconds() - self.m0
        ours = 0.0
        for pid, (cpu, cmd) in _cpu_by_pid().items():
            if self.ours(pid, cmd):
                ours += cpu - self.before[pid][0] if pid in self.before else cpu
        return max(0.0, machine - ours) / (elapsed * (os.cpu_count() or 1))


def wait_for_quiet(max_wait: float, threshold: float = 0.10, window: float = 0.5) -> float:
    """Before a timed phase: wait (up to max_wait s) until the whole machine is nearly idle
    (busy below `threshold` of all CPUs over `window` s), so nothing left over from the last
    phase, nor another user of the machine, runs into this one. Returns the last busy share."""
    deadline = time.monotonic() + max_wait
    ncpu = os.cpu_count() or 1
    while True:
        b0 = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - b0) / (window * ncpu)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# -- agents: one process per role, running in the system's virtualenv ---------------------------


class AgentError(RuntimeError):
    pass


class Agent:
    def __init__(self, system: str, python: str, dsn: str, logfile: str) -> None:
        self.system = system
        self.log = open(logfile, "a")
        self.log.write(f"\n==== {datetime.now().isoformat()} {system}\n")
        self.log.flush()
        self.proc = subprocess.Popen(
            [python, "-u", AGENT, system, dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            cwd=HERE,
            start_new_session=True,
        )
        _children.append(self.proc)
        self.replies: queue.Queue[dict] = queue.Queue()
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []  # events taken off the queue by saw()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._reply("hello", 120)
        self.pid = hello["pid"]

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                self.log.write("stdout: " + line)
                continue
            if "event" in msg:
                msg["recv_ns"] = time.time_ns()
                self.events.put(msg)
            else:
                self.replies.put(msg)
        self.replies.put({"reply": "eof", "ok": False, "error": f"{self.system} agent exited"})

    def _reply(self, op: str, timeout: float) -> dict:
        try:
            msg = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AgentError(f"{self.system}: no answer to {op!r} within {timeout:.0f} s") from None
        if not msg.get("ok", True) or msg.get("reply") != op:
            raise AgentError(f"{self.system}: {op} failed: {msg.get('error', msg)}")
        return msg

    def saw(self, event: str) -> bool:
        """Has the agent sent this event yet? (Moves arrived events to self.seen.)"""
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                break
        return any(ev["event"] == event for ev in self.seen)

    def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def call(self, op: str, timeout: float = 120, **kw: Any) -> dict:
        self.send(op, **kw)
        return self._reply(op, timeout)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("exit")
                self.proc.wait(15)
        except Exception:
            pass
        kill(self.proc)
        self.log.close()


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the agent's own session, started by us
        except ProcessLookupError:
            pass
        proc.wait(5)
    if proc in _children:
        _children.remove(proc)


# -- scenarios -----------------------------------------------------------------------------------


class Store:
    """Where one system keeps its jobs in one scenario: its PostgreSQL database (sync None) or a
    SQLite file in .sqlite/<system>/ (sync "normal" or "full")."""

    def __init__(self, bench: Bench, system: str, sync: str | None = None) -> None:
        self.bench, self.system, self.sync = bench, system, sync
        self.sqlite = sync is not None
        if self.sqlite:
            spec = SQLITE_SYSTEMS[system]
            self.dir = os.path.join(SQLITE_DIR, system)
            self.path = os.path.join(self.dir, spec["file"])
            if system == "ferroq":
                template = FERROQ_SQLITE_URL if bench.ferroq_sync_param else FERROQ_SQLITE_URL_FIXED
            else:
                template = HUEY_SQLITE_URL
            self.dsn = template.format(path=self.path, sync=sync)
            self.db = "-sqlite-"  # no PostgreSQL backend takes part
            self.open_sql, self.completed_sql, self.count_sql = spec["open_sql"], spec["completed_sql"], None
        else:
            self.db = f"bench_{system}"
            self.dsn = bench.pg.dsn(self.db)
            spec = SYSTEMS[system]
            self.open_sql, self.completed_sql = spec["open_sql"], spec["completed_sql"]
            self.count_sql = spec.get("count_sql")

    def recreate(self) -> None:
        if self.sqlite:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
        else:
            self.bench.pg.recreate(self.db)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        if self.sqlite:
            # Autocommit (no read transaction is held between polls); this connection never writes.
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
        else:
            with self.bench.pg.connect(self.db) as conn:
                yield conn

    def quiesce(self, conn: Any) -> None:
        """Before every timed phase. SQLite: the WAL is checkpointed into the database file and
        truncated, and the page cache written out, so each system starts with an empty WAL."""
        if self.sqlite:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            os.sync()
        else:
            self.bench.pg.quiesce(self.db)

    def open_jobs(self, conn: Any, n: int | None = None) -> int:
        """Jobs not finished yet: the polled "done" query (n given) or the exact check."""
        sql = self.open_sql if n is not None else self.count_sql or self.open_sql
        return conn.execute(sql.replace("{n}", str(n or 0))).fetchone()[0]

    def label(self) -> str:
        return f"synchronous={self.sync.upper()}" if self.sqlite else "PostgreSQL"


#: The completions check after a drain is informational; awa's jobs view, which rebuilds every
#: job from its storage segments, once took over five minutes after a drain at concurrency 10.
COMPLETED_CHECK_TIMEOUT = "30s"


def bounded_count(conn: Any, sql: str, sqlite: bool) -> int | None:
    """``sql``'s count, or None (logged) when PostgreSQL takes longer than the check allows."""
    if sqlite:
        return conn.execute(sql).fetchone()[0]
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = '{COMPLETED_CHECK_TIMEOUT}'")
            return conn.execute(sql).fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - QueryCanceled; the check is left out, not the run
        log(f"  completions check skipped after {COMPLETED_CHECK_TIMEOUT}: {type(exc).__name__}")
        return None


class Bench:
    def __init__(self, args: argparse.Namespace, pg: Pg, pythons: dict[str, str]) -> None:
        self.args, self.pg, self.pythons = args, pg, pythons
        self.logdir = os.path.join(RESULTS, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.settings: dict[str, Any] = {}
        self.ferroq_sync_param = False  # set in main() from probe_ferroq_sqlite_sync

    def store(self, system: str, sync: str | None = None) -> Store:
        return Store(self, system, sync)

    def agent(self, system: str, role: str, store: Store) -> Agent:
        suffix = "-sqlite" if store.sqlite else ""
        return Agent(system, self.pythons[system], store.dsn, os.path.join(self.logdir, f"{system}{suffix}-{role}.log"))

    def fresh(self, store: Store, mode: str, keys: int = 0, concurrency: int | None = None) -> Agent:
        """Drop/create the system's database (or SQLite directory), install its schema;
        returns the setup agent."""
        system = store.system
        store.recreate()
        a = self.agent(system, "client", store)
        try:
            info = a.call("init", mode=mode, keys=keys, concurrency=concurrency)
            # Per system, the settings of each (store, mode, concurrency) it ran with.
            settings = info.get("settings") or {}
            tag = f"{'sqlite ' + store.sync if store.sqlite else 'postgresql'} {mode} c={settings.get('concurrency')}"
            self.settings.setdefault(system, {}).setdefault(tag, settings)
            a.call("setup", timeout=300)
            a.call("open")
        except Exception:
            a.close()
            raise
        return a

    # 1. bulk enqueue (PostgreSQL)
    def enqueue(self, system: str) -> dict:
        n, batch = self.args.jobs, self.args.batch
        store = self.store(system)
        a = self.fresh(store, "drain")
        try:
            self.pg.quiesce(store.db)
            busy = wait_for_quiet(self.args.quiet_wait)
            other = OtherCpu(store.db, a.pid)
            r = a.call("enqueue", n=n, batch=batch, timeout=self.args.timeout)
            other_share = other.share()
            a.call("close")
        finally:
            a.close()
        with store.connect() as conn:
            count = store.open_jobs(conn)
        if count != n:
            raise AgentError(f"{system}: {count} jobs in the database after enqueueing {n}")
        return {
            "jobs_per_s": n / r["seconds"],
            "seconds": r["seconds"],
            "calls": r["calls"],
            "busy_before": busy,
            "other_cpu": other_share,
        }

    # sqlite-enqueue: the single-job API in a loop
    def enqueue_single(self, system: str, sync: str) -> dict:
        n = self.args.jobs
        store = self.store(system, sync)
        a = self.fresh(store, "drain")
        try:
            with store.connect() as conn:
                store.quiesce(conn)
            busy = wait_for_quiet(self.args.quiet_wait)
            other = OtherCpu(store.db, a.pid)
            r = a.call("enqueue_single", n=n, timeout=self.args.timeout)
            other_share = other.share()
            a.call("close")
        finally:
            a.close()
        with store.connect() as conn:
            count = store.open_jobs(conn)
        if count != n:
            raise AgentError(f"{system}: {count} jobs in the database after enqueueing {n}")
        return {
            "jobs_per_s": n / r["seconds"],
            "seconds": r["seconds"],
            "cpu_us_per_call": r["cpu_seconds"] / n * 1e6,
            "busy_before": busy,
            "other_cpu": other_share,
        }

    # 2. drain, io and 4. blocking on PostgreSQL; sqlite-drain (sync given)
    def drain(self, system: str, mode: str, concurrency: int, sync: str | None = None) -> dict:
        n, batch = self.args.jobs, self.args.batch
        keys = self.args.keys if mode == "blocking" else 0
        store = self.store(system, sync)
        a = self.fresh(store, mode, keys, concurrency)
        try:
            a.call("enqueue", n=n, batch=batch, keys=keys, timeout=self.args.timeout)
            a.call("close")
        finally:
            a.close()
        with store.connect() as conn:
            count = store.open_jobs(conn)
            if count != n:
                raise AgentError(f"{system}: {count} open jobs after prefilling {n}")
            store.quiesce(conn)
            w = self.agent(system, "worker", store)
            try:
                # On SQLite the agent also reports when its n-th handler has returned.
                w.call("init", mode=mode, keys=keys, concurrency=concurrency, expect=n if store.sqlite else 0)
                busy = wait_for_quiet(self.args.quiet_wait)
                poll = self.args.poll_interval
                wal0 = None if store.sqlite else conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
                other = OtherCpu(store.db, w.pid)
                cpu0, mach0 = proc_cpu_seconds(w.pid), machine_busy_seconds()
                t0_ns, t0 = time.time_ns(), time.perf_counter()
                w.call("start_worker")
                remaining, timed_out = n, False
                deadline = t0 + self.args.timeout
                last_t, last_rem = t0, n
                while True:
                    remaining = store.open_jobs(conn, n)
                    now = time.perf_counter()
                    if remaining == 0 and (not store.sqlite or w.saw("all_done")):
                        break
                    if now > deadline:
                        timed_out = True
                        break
                    # Poll every `poll` s; near the end (projected to finish before the next
                    # poll, or under 5 % left), every 10 ms, so the finish time is not rounded
                    # up by a whole polling period.
                    rate = (last_rem - remaining) / max(now - last_t, 1e-6)
                    near = remaining < 0.05 * n or (rate > 0 and remaining / rate < poll)
                    last_t, last_rem = now, remaining
                    time.sleep(0.01 if near else poll)
                t1 = time.perf_counter()
                cpu1, mach1 = proc_cpu_seconds(w.pid), machine_busy_seconds()
                other_share = other.share()
                wal = (
                    None
                    if store.sqlite
                    else conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal0,)).fetchone()[0]
                )
                stop = w.call("stop_worker", timeout=60)
                w.call("close")
            finally:
                w.close()
            completed = None
            if store.completed_sql:
                completed = bounded_count(conn, store.completed_sql, store.sqlite)
        w.saw("first")
        first_ms = next(((ev["ns"] - t0_ns) / 1e6 for ev in w.seen if ev["event"] == "first"), None)
        done = n - remaining
        elapsed = t1 - t0
        result = {
            "jobs_per_s": done / elapsed,
            "seconds": elapsed,
            "finished": done,
            "worker_cpu_us_per_job": (cpu1 - cpu0) / max(done, 1) * 1e6,
            "machine_cpu_us_per_job": (mach1 - mach0) / max(done, 1) * 1e6,
            "first_job_ms": first_ms,
            "completed_in_sql": completed,
            "handled": stop.get("handled"),
            "busy_before": busy,
            "other_cpu": other_share,
        }
        if wal is not None:
            result["wal_bytes_per_job"] = float(wal) / max(done, 1)
        if mode == "io":
            result["pct_of_limit"] = result["jobs_per_s"] / IO_LIMIT * 100
        if timed_out:
            result["timed_out"] = f"{remaining} of {n} still open after {self.args.timeout:.0f} s"
        elif store.sqlite and stop.get("handled") != n:
            result["warning"] = f"{stop.get('handled')} handler calls for {n} jobs"
        if mode == "blocking":
            result["overlaps"] = stop.get("overlaps")
            result["out_of_order"] = stop.get("out_of_order")
        return result

    # 3. idle pickup latency (PostgreSQL; sqlite-latency with sync given)
    def latency(self, system: str, sync: str | None = None) -> dict:
        store = self.store(system, sync)
        concurrency = self.args.latency_concurrency
        p = self.fresh(store, "latency", concurrency=concurrency)
        w = None
        try:
            with store.connect() as conn:
                store.quiesce(conn)
            w = self.agent(system, "worker", store)
            w.call("init", mode="latency", concurrency=concurrency)
            w.call("start_worker")
            busy = wait_for_quiet(self.args.quiet_wait)
            other = OtherCpu(store.db, w.pid, p.pid)
            samples: list[float] = []
            lost = 0
            total = self.args.warmup + self.args.latency_jobs
            for seq in range(total):
                p.call("produce", seq=seq)
                deadline = time.monotonic() + self.args.latency_timeout
                got = None
                while got is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        ev = w.events.get(timeout=left)
                    except queue.Empty:
                        break
                    if ev["event"] == "lat" and ev["seq"] == seq:
                        got = ev
                if got is None:
                    lost += 1
                elif seq >= self.args.warmup:
                    samples.append(got["ns"] / 1e6)
                time.sleep(self.args.latency_gap)
            other_share = other.share()
            w.call("stop_worker", timeout=60)
            w.call("close")
            p.call("close")
        finally:
            p.close()
            if w:
                w.close()
        if not samples:
            raise AgentError(f"{system}: no job ran within {self.args.latency_timeout} s")
        samples.sort()
        result = {
            "p50_ms": pct(samples, 50),
            "p99_ms": pct(samples, 99),
            "max_ms": samples[-1],
            "samples": len(samples),
            "busy_before": busy,
            "other_cpu": other_share,
        }
        if lost:
            result["lost"] = f"{lost} jobs not seen within {self.args.latency_timeout} s"
        return result


def probe_ferroq_sqlite_sync(python: str) -> tuple[bool, str]:
    """Does this ferroq take `?synchronous=` in its SQLite URL? It is asked to open a file with
    `?synchronous=bogus`: a ferroq that reads the parameter refuses that, and opens one with
    `?synchronous=full`; one that ignores the query string opens both (at its built-in NORMAL)."""
    code = (
        "import sys, ferroq\n"
        "try:\n"
        "    app = ferroq.App(sys.argv[1], concurrency=1)\n"
        "    app.migrate()\n"
        "    app.close()\n"
        "except Exception as exc:\n"
        "    print('refused:', type(exc).__name__, exc)\n"
        "else:\n"
        "    print('accepted')\n"
    )

    def attempt(sync: str) -> str:
        d = os.path.join(SQLITE_DIR, "probe")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        url = FERROQ_SQLITE_URL.format(path=os.path.join(d, "probe.db"), sync=sync)
        try:
            out = subprocess.run([python, "-c", code, url], capture_output=True, text=True, timeout=120)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        text = (out.stdout.strip() or out.stderr.strip()[-300:]).replace("\n", " ")
        if out.returncode != 0:
            raise RuntimeError(f"ferroq SQLite probe failed: {text}")
        return text

    bogus = attempt("bogus")
    if bogus == "accepted":
        return False, "synchronous=bogus accepted (query string ignored)"
    full = attempt("full")
    if full != "accepted":
        raise RuntimeError(f"ferroq SQLite probe failed: synchronous=full {full}")
    return True, f"synchronous=bogus {bogus}; synchronous=full accepted"


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- SQL ceilings with pgbench -------------------------------------------------------------------


def pgbench_path() -> str:
    path = shutil.which("pgbench")
    if path:
        return path
    for cand in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        p = f"/usr/lib/postgresql/{cand}/bin/pgbench"
        if os.path.exists(p):
            return p
    raise RuntimeError("pgbench not found")


def ceilings(args: argparse.Namespace, pg: Pg) -> dict[str, dict]:
    db = "bench_pgbench"
    pgbench = pgbench_path()
    secs = args.pgbench_seconds
    clients = args.pgbench_clients
    prefill = args.pgbench_prefill or 150_000 * secs
    out: dict[str, dict] = {"insert": {"runs": []}, "claim_delete": {"runs": []}, "fifo_per_key": {"runs": []}}
    url = pg.dsn(db)

    def sql_file(name: str) -> str:
        return os.path.join(SQL_DIR, name)

    def bench(script: str, table: str, conn: Any) -> dict:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        busy = wait_for_quiet(args.quiet_wait)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                pgbench,
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-T",
                str(secs),
                "-D",
                f"nkeys={args.keys}",
                "-D",
                f"nclients={clients}",
                "-f",
                sql_file(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=secs + 120,
        )
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench {script} failed: {proc.stderr.strip()[-500:]}")
        after = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        tps = None
        for line in proc.stdout.splitlines():
            if line.startswith("tps ="):
                tps = float(line.split()[2])
        return {
            "rows_per_s": abs(after - before) / elapsed,
            "rows": abs(after - before),
            "seconds": elapsed,
            "tps": tps,
            "left": after,
            "busy_before": busy,
        }

    pg.recreate(db)
    try:
        with pg.connect(db) as conn:
            conn.execute(open(sql_file("schema.sql")).read())
            for run in range(args.runs):
                log(f"ceiling run {run + 1}/{args.runs}: insert")
                conn.execute("TRUNCATE bench_jobs")
                pg.quiesce(db)
                out["insert"]["runs"].append(bench("insert.sql", "bench_jobs", conn))

                log(f"ceiling run {run + 1}/{args.runs}: claim + delete ({prefill:,} rows prefilled)")
                conn.execute("TRUNCATE bench_jobs")
                conn.execute("INSERT INTO bench_jobs (args) SELECT '{}'::jsonb FROM generate_series(1, %s)", (prefill,))
                pg.quiesce(db)
                r = bench("claim_delete.sql", "bench_jobs", conn)
                if r["left"] == 0:
                    r["warning"] = "table ran dry: raise --pgbench-prefill"
                out["claim_delete"]["runs"].append(r)

                log(f"ceiling run {run + 1}/{args.runs}: FIFO per key ({args.keys} keys)")
                conn.execute("TRUNCATE bench_fifo")
                conn.execute("TRUNCATE bench_fifo_keys")
                conn.execute(
                    "INSERT INTO bench_fifo (key) SELECT g %% %s FROM generate_series(0, %s - 1) g",
                    (args.keys, prefill),
                )
                conn.execute(
                    "INSERT INTO bench_fifo_keys (key) SELECT g FROM generate_series(0, %s - 1) g", (args.keys,)
                )
                pg.quiesce(db)
                r = bench("fifo_per_key.sql", "bench_fifo", conn)
                if r["left"] == 0:
                    r["warning"] = "table ran dry: raise --pgbench-prefill"
                running = conn.execute("SELECT count(*) FROM bench_fifo_keys WHERE running").fetchone()[0]
                if running:
                    r["keys_left_running"] = running
                out["fifo_per_key"]["runs"].append(r)
    finally:
        if not args.keep_databases:
            pg.drop(db)
    for v in out.values():
        v["median"] = {"rows_per_s": statistics.median(x["rows_per_s"] for x in v["runs"])}
        v["settings"] = f"pgbench -n -M prepared -c {clients} -j {clients} -T {secs}"
    out["claim_delete"]["settings"] += f", {prefill:,} rows prefilled"
    out["fifo_per_key"]["settings"] += f", {prefill:,} rows over {args.keys} keys prefilled"
    return out


# -- environment ---------------------------------------------------------------------------------


def environment(pg: Pg) -> dict:
    env: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor"):
                env[k.strip()] = v.strip()
    except OSError:
        pass
    env["nproc"] = os.cpu_count()
    env["kernel"] = platform.release()
    with open("/proc/meminfo") as f:
        env["memory"] = f.readline().split(":")[1].strip()
    env["postgres"] = pg.scalar("SELECT version()")
    env["postgres_settings"] = {
        name: pg.scalar(f"SHOW {name}")
        for name in (
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "full_page_writes",
            "wal_level",
            "max_connections",
            "max_wal_size",
            "checkpoint_timeout",
            "autovacuum",
            "work_mem",
        )
    }
    env["repo_commit"] = subprocess.run(
        ["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    stamp = os.path.join(VENVS, "ferroq", ".bench-stamp")
    # What .venvs/ferroq was built from: "ref:<sha>" (--ferroq-ref) or "tree:<HEAD>:<diff hash>".
    env["ferroq_built_from"] = open(stamp).read() if os.path.exists(stamp) else None
    return env


# -- the table -----------------------------------------------------------------------------------

# One table row: (key, label, result key, field, higher_is_better, format, ceiling key).
Row = tuple[str, str, str, str, bool, str, str | None]


def pg_rows(args: argparse.Namespace) -> list[Row]:
    """The PostgreSQL table's rows, in order, for the scenarios and concurrencies asked for."""
    rows: list[Row] = [("enqueue", "bulk enqueue, jobs/s", "enqueue", "jobs_per_s", True, "int", "insert")]
    # Machine CPU and first-job rows only for one concurrency (c=100 if swept); the JSON has all.
    main_c = 100 if 100 in args.concurrencies else args.concurrencies[0]
    for c in args.concurrencies:
        key = f"drain c={c}"
        rows += [
            (key, f"drain c={c}, jobs/s", key, "jobs_per_s", True, "int", "claim_delete"),
            (key + " cpu", f"drain c={c}: worker CPU, µs/job", key, "worker_cpu_us_per_job", False, "int", None),
        ]
        if c == main_c:
            rows += [
                (key + " mcpu", f"drain c={c}: machine CPU, µs/job", key, "machine_cpu_us_per_job", False, "int", None),
                (key + " first", f"drain c={c}: first job after start, ms", key, "first_job_ms", False, "ms", None),
            ]
    io = f"io drain ({IO_SLEEP * 1000:g} ms jobs, c={IO_CONCURRENCY})"
    rows += [
        ("io", f"{io}, jobs/s", "io", "jobs_per_s", True, "int", None),
        ("io pct", f"{io}, % of {IO_LIMIT:,.0f}/s", "io", "pct_of_limit", True, "pct", None),
        ("io cpu", f"{io}: worker CPU, µs/job", "io", "worker_cpu_us_per_job", False, "int", None),
    ]
    lc = args.latency_concurrency
    rows += [
        ("p50", f"idle pickup p50 (c={lc}), ms", "latency", "p50_ms", False, "ms", None),
        ("p99", f"idle pickup p99 (c={lc}), ms", "latency", "p99_ms", False, "ms", None),
        ("max", f"idle pickup max (c={lc}), ms", "latency", "max_ms", False, "ms", None),
        (
            "blocking",
            f"blocking, {args.keys:,} keys, 1 running/key (c={args.blocking_concurrency}), jobs/s",
            "blocking",
            "jobs_per_s",
            True,
            "int",
            "fifo_per_key",
        ),
    ]
    return rows


def sqlite_rows(args: argparse.Namespace) -> list[Row]:
    """The SQLite table's rows: per synchronous setting, enqueue, drain per concurrency, latency."""
    rows: list[Row] = []
    lc = args.latency_concurrency
    for sync in args.sqlite_syncs_effective:
        tag = f"[synchronous={sync.upper()}]"
        key = f"sqlite-enqueue {sync}"
        rows += [
            (key, f"single enqueue {tag}, jobs/s", key, "jobs_per_s", True, "int", None),
            (key + " cpu", f"single enqueue {tag}: CPU, µs/call", key, "cpu_us_per_call", False, "int", None),
        ]
        for c in args.sqlite_concurrencies:
            key = f"sqlite-drain {sync} c={c}"
            rows += [
                (key, f"drain c={c} {tag}, jobs/s", key, "jobs_per_s", True, "int", None),
                (
                    key + " cpu",
                    f"drain c={c} {tag}: worker CPU, µs/job",
                    key,
                    "worker_cpu_us_per_job",
                    False,
                    "int",
                    None,
                ),
            ]
        key = f"sqlite-latency {sync}"
        rows += [
            (key + " p50", f"idle pickup p50 (c={lc}) {tag}, ms", key, "p50_ms", False, "ms", None),
            (key + " p99", f"idle pickup p99 (c={lc}) {tag}, ms", key, "p99_ms", False, "ms", None),
            (key + " max", f"idle pickup max (c={lc}) {tag}, ms", key, "max_ms", False, "ms", None),
        ]
    return rows


def fmt(v: Any, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:,.1f}"
    if kind == "pct":
        return f"{v:,.1f} %"
    return str(v)


def build_table(
    results: dict,
    ceil: dict | None,
    systems: list[str],
    row_specs: list[Row],
    notes: list[str],
    with_ceiling: bool = True,
) -> tuple[str, list[dict]]:
    """One table; its notes are appended to `notes` (shared by the tables of one run)."""
    peers = [s for s in systems if s != "ferroq"]
    header = ["scenario", *systems]
    if "ferroq" in systems and peers:
        header += ["best peer", "ferroq ÷ best"]
    if with_ceiling:
        header += ["SQL ceiling"]
    rows, records = [], []
    note_ids: dict[str, int] = {text: i + 1 for i, text in enumerate(notes)}

    def note(text: str) -> str:
        if text not in note_ids:
            note_ids[text] = len(notes) + 1
            notes.append(text)
        return f"[{note_ids[text]}]"

    for key, label, scen, field, higher, kind, ceil_key in row_specs:
        if scen not in results:
            continue
        cells, values = [], {}
        for s in systems:
            r = results[scen].get(s)
            if r is None:
                cells.append("")
                continue
            if "na" in r:
                cells.append("n/a " + note(f"{s} {scen}: {r['na']}"))
                continue
            v = r["median"].get(field)
            values[s] = v
            cell = fmt(v, kind)
            if r.get("flags"):
                cell += " " + note(f"{s} {scen}: {'; '.join(r['flags'])}")
            cells.append(cell)
        record = {"row": key, "label": label, "values": values}
        if "ferroq" in systems and peers:
            pv = {s: values[s] for s in peers if values.get(s) is not None}
            if pv:
                best = (max if higher else min)(pv, key=pv.get)
                cells.append(f"{best} {fmt(pv[best], kind)}")
                fv = values.get("ferroq")
                ratio = fv / pv[best] if fv is not None and pv[best] else None
                cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
                record.update({"best_peer": best, "ferroq_over_best": ratio, "higher_is_better": higher})
            else:
                cells += ["–", "–"]
        if with_ceiling:
            cv = None
            if ceil and ceil_key and ceil_key in ceil:
                cv = ceil[ceil_key]["median"]["rows_per_s"]
            cells.append(fmt(cv, "int") + " rows/s" if cv is not None else "")
            record["sql_ceiling_rows_per_s"] = cv
        rows.append([label, *cells])
        records.append(record)
    if not rows and ceil and with_ceiling:
        for name, label in (("insert", "insert"), ("claim_delete", "claim + delete"), ("fifo_per_key", "FIFO per key")):
            rows.append(
                [
                    f"SQL ceiling: {label}",
                    *[""] * (len(header) - 2),
                    fmt(ceil[name]["median"]["rows_per_s"], "int") + " rows/s",
                ]
            )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for i, r in enumerate([header, *rows]):
        lines.append(
            "| "
            + " | ".join(str(c).ljust(widths[j]) if j == 0 else str(c).rjust(widths[j]) for j, c in enumerate(r))
            + " |"
        )
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return ("\n".join(lines) if rows else ""), records


def summarize(runs: list[dict]) -> dict:
    med: dict[str, Any] = {}
    rng: dict[str, Any] = {}
    for k in runs[0]:
        vals = [r.get(k) for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if vals and len(vals) == len(runs):
            med[k] = statistics.median(vals)
            rng[k] = [min(vals), max(vals)]
    return {"median": med, "range": rng}


# -- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--jobs", type=int, default=20_000, help="N for enqueue, drain, io, blocking and sqlite-* (default 20,000)"
    )
    ap.add_argument("--runs", type=int, default=3, help="runs per cell; the table shows medians (default 3)")
    ap.add_argument("--only", default=",".join(ORDER), help=f"systems, comma-separated (default {','.join(ORDER)})")
    ap.add_argument("--scenario", default=",".join(SCENARIOS), help=f"scenarios (default {','.join(SCENARIOS)})")
    ap.add_argument("--batch", type=int, default=1000, help="jobs per bulk-enqueue call (default 1,000)")
    ap.add_argument("--keys", type=int, default=1000, help="keys/queues in the blocking scenario (default 1,000)")
    ap.add_argument(
        "--concurrency",
        default="10,100,1000",
        help="drain: worker concurrencies, one row each, the same for every system (default 10,100,1000)",
    )
    ap.add_argument(
        "--blocking-concurrency", type=int, default=1000, help="worker concurrency in the blocking scenario (1,000)"
    )
    ap.add_argument(
        "--latency-concurrency", type=int, default=100, help="worker concurrency in the latency scenarios (100)"
    )
    ap.add_argument(
        "--sqlite-sync",
        default="full",
        help="SQLite synchronous setting(s) for ferroq and huey: normal, full or normal,full (default full)",
    )
    ap.add_argument(
        "--sqlite-concurrency", default="10,100", help="worker concurrencies of sqlite-drain (default 10,100)"
    )
    ap.add_argument("--latency-jobs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--latency-gap", type=float, default=0.02, help="pause after a job ran before the next (s)")
    ap.add_argument("--latency-timeout", type=float, default=10.0)
    ap.add_argument("--poll-interval", type=float, default=0.05, help="done-query polling period (s)")
    ap.add_argument("--timeout", type=float, default=240.0, help="limit for one drain (s)")
    ap.add_argument("--pgbench-seconds", type=int, default=10)
    ap.add_argument("--pgbench-clients", type=int, default=2)
    ap.add_argument(
        "--pgbench-prefill",
        type=int,
        default=0,
        help="rows prefilled for the claim ceilings (default 150,000 × seconds)",
    )
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432", help="server URL without database")
    ap.add_argument("--python311", default=None)
    ap.add_argument("--python312", default=None)
    ap.add_argument(
        "--ferroq-ref", default=None, help="build ferroq from this git ref (e.g. HEAD) instead of the working tree"
    )
    ap.add_argument(
        "--ferroq-python", default=None, help="use this interpreter (with ferroq installed) instead of .venvs/ferroq"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each timed phase, wait up to this long (s) for an idle machine",
    )
    ap.add_argument(
        "--other-cpu-flag",
        type=float,
        default=0.10,
        help="flag runs where other processes used this share of the machine",
    )
    ap.add_argument("--keep-databases", action="store_true")
    ap.add_argument("--output", default=os.path.join(RESULTS, "latest.json"))
    args = ap.parse_args()
    args.systems = [s.strip() for s in args.only.split(",") if s.strip()]
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; known: {', '.join(ORDER)}")
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    args.systems = [s for s in ORDER if s in args.systems]
    args.scenarios = [s for s in SCENARIOS if s in args.scenarios]

    def ints(text: str, flag: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            ap.error(f"{flag}: comma-separated integers")
        if not values or min(values) < 1:
            ap.error(f"{flag}: at least one value, each >= 1")
        return values

    args.concurrencies = ints(args.concurrency, "--concurrency")
    args.sqlite_concurrencies = ints(args.sqlite_concurrency, "--sqlite-concurrency")
    args.sqlite_syncs = [x.strip().lower() for x in args.sqlite_sync.split(",") if x.strip()]
    if not args.sqlite_syncs or any(x not in ("normal", "full") for x in args.sqlite_syncs):
        ap.error("--sqlite-sync: normal, full or normal,full")
    args.sqlite_syncs_effective = list(args.sqlite_syncs)  # main() may fall back to normal
    return args


def main() -> int:
    ensure_harness_python()
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C: the finally below kills the agents and drops the databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(RESULTS, exist_ok=True)
    started = time.perf_counter()
    pg = Pg(args.dsn)
    pythons, freeze, failures = {}, {}, {}
    for s in args.systems:
        try:
            pythons[s] = ensure_venv(s, args)
            freeze[s] = pip_freeze(pythons[s])
        except Exception as exc:
            failures[s] = f"setup failed: {exc}"
            log(f"{s}: {failures[s]}")
    bench = Bench(args, pg, pythons)
    results: dict[str, dict] = {}
    ceil = None
    sqlite_notes: list[str] = []
    sqlite_failures: dict[str, str] = {}  # systems that cannot run the sqlite-* scenarios
    sqlite_asked = [x for x in args.scenarios if x in SQLITE_SCENARIOS]
    if sqlite_asked and "ferroq" in args.systems and "ferroq" not in failures:
        try:
            bench.ferroq_sync_param, probe = probe_ferroq_sqlite_sync(pythons["ferroq"])
        except Exception as exc:
            sqlite_failures["ferroq"] = str(exc)
            probe = str(exc)
        log(
            f"ferroq SQLite ?synchronous= probe: {probe} -> "
            + ("supported" if bench.ferroq_sync_param else "not supported")
        )
        if not bench.ferroq_sync_param and "full" in args.sqlite_syncs:
            # Durability must be equal: until ferroq can run at FULL, both run at NORMAL.
            args.sqlite_syncs_effective = ["normal"]
            sqlite_notes.append(
                "this ferroq does not read ?synchronous= in its SQLite URL (it runs at WAL + synchronous=NORMAL), "
                f"so the sqlite-* rows asked at {','.join(x.upper() for x in args.sqlite_syncs)} ran at NORMAL "
                f"for ferroq and huey alike (probe: {probe})"
            )
        args.ferroq_sqlite_probe = probe
    pg_systems = [s for s in args.systems if not SYSTEMS[s].get("sqlite_only")]
    sqlite_systems = [s for s in args.systems if s in SQLITE_SYSTEMS]

    def cell(key: str, kind: str, system: str, one_run: Callable[[], dict]) -> None:
        """R runs of one system in one result row group; the medians and the flags."""
        failed = failures.get(system) or (key.startswith("sqlite-") and sqlite_failures.get(system))
        if failed:
            results[key][system] = {"na": failed}
            return
        runs, error = [], None
        for i in range(args.runs):
            log(f"{key} {system} run {i + 1}/{args.runs}")
            try:
                r = one_run()
            except Exception as exc:
                error = str(exc)
                log(f"  failed: {error}")
                break
            log("  " + ", ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
            runs.append(r)
        if error and not runs:
            results[key][system] = {"na": error, "runs": runs}
            return
        entry = {"runs": runs, **summarize(runs)}
        flags = [r[k] for r in runs for k in ("timed_out", "lost", "warning") if r.get(k)]
        busy = [r["busy_before"] for r in runs if r.get("busy_before", 0) >= 0.25]
        if busy:
            flags.append(f"machine {max(busy):.0%} busy (other processes) just before {len(busy)} of the timed runs")
        other = [r["other_cpu"] for r in runs if r.get("other_cpu", 0) >= args.other_cpu_flag]
        if other:
            flags.append(
                f"other processes used up to {max(other):.0%} of the machine during {len(other)} of the timed runs"
            )
        if error:
            flags.append(f"run {len(runs) + 1} failed: {error}")
        if kind == "blocking":
            if any(r.get("overlaps") for r in runs):
                flags.append("overlapping jobs of one key seen")
            if any(r.get("out_of_order") for r in runs):
                flags.append("jobs of one key ran out of FIFO order")
        if kind in ("drain", "blocking") and any(
            r.get("completed_in_sql") is not None and r["completed_in_sql"] != args.jobs for r in runs
        ):
            flags.append("completed count in the database differs from N")
        if flags:
            entry["flags"] = list(dict.fromkeys(flags))
        results[key][system] = entry

    try:
        for scen in args.scenarios:
            if scen in PG_SCENARIOS and not pg_systems or scen in SQLITE_SCENARIOS and not sqlite_systems:
                log(f"{scen}: none of the selected systems takes part, skipped")
                continue
            if scen == "ceiling":
                log("SQL ceilings with pgbench")
                try:
                    ceil = ceilings(args, pg)
                except Exception as exc:
                    log(f"ceilings failed: {exc}")
                    ceil = {"error": str(exc)}
                continue
            if scen == "drain":
                for c in args.concurrencies:
                    key = f"drain c={c}"
                    results[key] = {}
                    for s in pg_systems:
                        cell(key, "drain", s, lambda s=s, c=c: bench.drain(s, "drain", c))
            elif scen == "io":
                results["io"] = {}
                for s in pg_systems:
                    cell("io", "drain", s, lambda s=s: bench.drain(s, "io", IO_CONCURRENCY))
            elif scen == "enqueue":
                results["enqueue"] = {}
                for s in pg_systems:
                    cell("enqueue", "enqueue", s, lambda s=s: bench.enqueue(s))
            elif scen == "latency":
                results["latency"] = {}
                for s in pg_systems:
                    cell("latency", "latency", s, lambda s=s: bench.latency(s))
            elif scen == "blocking":
                results["blocking"] = {}
                for s in pg_systems:
                    if SYSTEMS[s]["blocking"]:
                        results["blocking"][s] = {"na": SYSTEMS[s]["blocking"]}
                        continue
                    cell("blocking", "blocking", s, lambda s=s: bench.drain(s, "blocking", args.blocking_concurrency))
            else:
                for sync in args.sqlite_syncs_effective:
                    if scen == "sqlite-enqueue":
                        key = f"sqlite-enqueue {sync}"
                        results[key] = {}
                        for s in sqlite_systems:
                            cell(key, "enqueue", s, lambda s=s, sync=sync: bench.enqueue_single(s, sync))
                    elif scen == "sqlite-drain":
                        for c in args.sqlite_concurrencies:
                            key = f"sqlite-drain {sync} c={c}"
                            results[key] = {}
                            for s in sqlite_systems:
                                cell(key, "drain", s, lambda s=s, sync=sync, c=c: bench.drain(s, "drain", c, sync))
                    else:
                        key = f"sqlite-latency {sync}"
                        results[key] = {}
                        for s in sqlite_systems:
                            cell(key, "latency", s, lambda s=s, sync=sync: bench.latency(s, sync))
    finally:
        for proc in _children:
            kill(proc)
        if not args.keep_databases:
            for s in pg_systems:
                try:
                    pg.drop(f"bench_{s}")
                except Exception as exc:
                    log(f"could not drop bench_{s}: {exc}")
            shutil.rmtree(SQLITE_DIR, ignore_errors=True)

    notes: list[str] = []
    good_ceil = ceil if ceil and "error" not in ceil else None
    pg_table, pg_records = build_table(results, good_ceil, pg_systems, pg_rows(args), notes)
    sqlite_table, sqlite_records = "", []
    if sqlite_asked and sqlite_systems:
        for text in sqlite_notes:
            notes.append(text)
        sqlite_table, sqlite_records = build_table(
            results, None, sqlite_systems, sqlite_rows(args), notes, with_ceiling=False
        )
    records = pg_records + sqlite_records
    env = environment(pg)
    elapsed = time.perf_counter() - started
    built = env.get("ferroq_built_from") or ""
    if args.ferroq_python:
        source = f"ferroq from {args.ferroq_python}"
    elif built.startswith("ref:"):
        source = f"ferroq @ {built[4:13]}"
    elif built.startswith("tree:"):
        _, head, diff = built.split(":")
        empty = hashlib.sha256(b"").hexdigest()[:16]
        source = f"ferroq @ {head[:9]}" + ("" if diff == empty else " + uncommitted changes")
    else:
        source = "ferroq"
    where = []
    if pg_table:
        where.append(f"PostgreSQL {env['postgres'].split()[1]}")
    if sqlite_table:
        where.append("SQLite files")
    title = (
        f"{source} vs peers on {' and '.join(where) or 'PostgreSQL'} ({env.get('Model name', '?')}, "
        f"{env['nproc']} CPUs): N={args.jobs:,}, medians of {args.runs} run(s), {elapsed / 60:.1f} min"
    )
    print()
    print(title)
    table = pg_table
    if pg_table:
        print(pg_table)
    if sqlite_table:
        head = f"SQLite: ferroq vs huey, files under {os.path.relpath(SQLITE_DIR, REPO)}/ (same disk as the repo)"
        print(("\n" if pg_table else "") + head)
        print(sqlite_table)
        table = (pg_table + "\n\n" if pg_table else "") + head + "\n" + sqlite_table
    for i, n in enumerate(notes, 1):
        print(f"[{i}] {n}")
    if ceil and "error" in ceil:
        print(f"SQL ceilings failed: {ceil['error']}")
    print(
        "ferroq ÷ best: ferroq's median over the best peer's; above 1 is better for jobs/s and %, "
        "below 1 for ms and µs."
    )
    if pg_table:
        print("SQL ceiling: pgbench on a bare table, same server (insert / claim+delete / FIFO-per-key claim+delete).")
    doc = {
        "title": title,
        "command": " ".join([os.path.relpath(__file__, os.getcwd()), *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k not in ("only", "scenario")},
        "environment": env,
        "systems": {
            s: {
                "python": pythons.get(s),
                "settings": bench.settings.get(s),
                "pip_freeze": freeze.get(s),
                "done_sql": SYSTEMS[s].get("open_sql"),
                "sqlite_done_sql": SQLITE_SYSTEMS.get(s, {}).get("open_sql"),
            }
            for s in args.systems
        },
        "results": results,
        "ceilings": ceil,
        "table": {"text": table, "notes": notes, "rows": records},
        "elapsed_s": elapsed,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if os.path.abspath(args.output) == os.path.abspath(os.path.join(RESULTS, "latest.json")):
        shutil.copyfile(args.output, os.path.join(RESULTS, f"run-{stamp}.json"))
    print(f"results: {os.path.relpath(args.output, os.getcwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
