"""SQLite only: the zero-setup default, WAL, cross-process wake-ups without NOTIFY, clear errors
for unusable paths, several processes on one file, and recovery from a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict

import pytest
from helpers import (
    RawDb,
    close_apps,
    count_jobs,
    ferroq_cli,
    seconds,
    stays_true,
    subprocess_env,
    transaction_connection,
    wait_for_job,
    wait_for_jobs,
    wait_until,
)

import ferroq

pytestmark = pytest.mark.only_on("sqlite")

TARGET = "apps.ledger_app:app"

#: Creates one job (queue argv[2], action "a") on the file of argv[1]; prints its id.
ENQUEUE_ONE = textwrap.dedent(
    """
    import sys, ferroq
    app = ferroq.App(sys.argv[1])
    print(app.create_job(sys.argv[2], "a").id)
    """
)


def _python(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def own_apps():
    """Apps a test builds itself (e.g. without a URL), closed at teardown."""
    apps: list[ferroq.App] = []
    yield apps
    close_apps(apps)


# --- zero setup ------------------------------------------------------------------------------


def test_zero_setup_default_database_in_working_directory(tmp_path, monkeypatch, own_apps):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERROQ_DATABASE_URL", raising=False)
    app = ferroq.App(poll_interval=60, stop_timeout=5)  # no URL, no migrate()
    own_apps.append(app)
    assert app.database_url == "sqlite:///ferroq.db"

    @app.performer("a")
    def a(job):
        return {"got": job.params["x"]}

    job = app.create_job("q", "a", {"x": 1})
    assert (tmp_path / "ferroq.db").is_file(), sorted(os.listdir(tmp_path))
    app.start()
    done = wait_for_job(app, job.id, "completed")
    assert done.result == {"got": 1}
    with RawDb.connect(f"sqlite:///{tmp_path / 'ferroq.db'}") as raw:
        assert raw.scalar("SELECT state FROM ferroq_jobs WHERE id = %s", (job.id,)) == "completed"
        assert raw.scalar("SELECT count(*) FROM ferroq_schema_migrations") >= 1


def test_wal_mode_is_on(app_factory, database_url):
    app = app_factory(migrate=False)
    app.create_job("q", "a")
    with RawDb.connect(database_url) as raw:  # a fresh connection reads the file's header
        assert raw.scalar("PRAGMA journal_mode").lower() == "wal"


def test_sequence_is_the_id(app_factory):
    app = app_factory()
    jobs = [app.create_job("q", "a"), *app.create_jobs([{"queue": "q", "action": "a"}] * 2)]
    assert [j.sequence for j in jobs] == [j.id for j in jobs]
    assert [app.get_job(j.id).sequence for j in jobs] == [j.id for j in jobs]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_url_without_a_file_is_a_configuration_error(url, own_apps):
    # Workers in other processes share the file, so there must be one.
    with pytest.raises(ferroq.ConfigurationError):
        own_apps.append(ferroq.App(url))
        own_apps[-1].create_job("q", "a")


# --- wake-ups without NOTIFY -------------------------------------------------------------------


def test_job_enqueued_by_another_process_starts_promptly(app_factory, database_url):
    app = app_factory(poll_interval=60, wakeup_interval=0.05)

    @app.performer("a")
    def a(job):
        return None

    app.start()
    for i in range(3):
        time.sleep(0.5)  # the worker is idle when the job arrives (not an assertion)
        proc = _python(ENQUEUE_ONE, database_url, f"q{i}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = int(proc.stdout.split()[-1])
        done = wait_for_job(app, job_id, "completed", timeout=10)
        latency = seconds(done.inserted_at, done.attempted_at)
        assert latency < 1.0, f"job {i} from another process started {latency:.2f}s after insert"

    # Enqueued in the worker's own process: starts at once, too.
    for i in range(3):
        time.sleep(0.3)
        job = app.create_job(f"same{i}", "a")
        done = wait_for_job(app, job.id, "completed", timeout=5)
        latency = seconds(done.inserted_at, done.attempted_at)
        assert latency < 0.5, f"same-process job {i} started {latency:.2f}s after insert"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the WAL is watched with inotify on Linux")
def test_another_processs_job_is_seen_through_the_wal_watch_not_the_poll(app_factory, database_url):
    # Both polls are far away: only the watch on the -wal file can start these jobs in time.
    app = app_factory(poll_interval=120, wakeup_interval=60)

    @app.performer("a")
    def a(job):
        return None

    app.start()
    time.sleep(0.3)  # the watcher is up (it looks once at start, which would hide a miss)
    for i in range(3):
        time.sleep(0.3)
        proc = _python(ENQUEUE_ONE, database_url, f"w{i}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = int(proc.stdout.split()[-1])
        done = wait_for_job(app, job_id, "completed", timeout=10)
        latency = seconds(done.inserted_at, done.attempted_at)
        assert latency < 1.0, f"job {i} from another process started {latency:.2f}s after insert"


# --- durability: ?synchronous= -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", "full"), ("?synchronous=full", "full"), ("?synchronous=normal", "normal"), ("?synchronous=NORMAL", "normal")],
)
def test_synchronous_is_chosen_in_the_url_and_read_back_from_ferroqs_connections(tmp_path, own_apps, query, expected):
    app = ferroq.App(f"sqlite:///{tmp_path / 'jobs.db'}{query}")
    own_apps.append(app)
    assert app.sqlite_synchronous() == expected
    # The enqueue connection too (it opens on the first create_job after the schema exists).
    for _ in range(2):
        app.create_job("q", "a")
    assert app.sqlite_synchronous() == expected


@pytest.mark.parametrize(
    "query",
    ["?synchronous=off", "?synchronous=extra", "?synchronous=", "?synchronous", "?sync=full", "?synchronous=full&x=1"],
)
def test_bad_synchronous_or_unknown_parameter_is_refused_before_anything_is_written(tmp_path, own_apps, query):
    path = tmp_path / "jobs.db"
    with pytest.raises(ferroq.ConfigurationError, match="synchronous"):
        own_apps.append(ferroq.App(f"sqlite:///{path}{query}"))
    assert not path.exists()
    assert os.listdir(tmp_path) == []


# --- unusable paths ------------------------------------------------------------------------------


def _first_use_error(url: str, own_apps: list, calls=("migrate", "create_job")):
    """The errors of constructing an App on ``url`` and then of each call, each within 10 s."""
    errors = []
    started = time.monotonic()
    try:
        app = ferroq.App(url, stop_timeout=2)
    except ferroq.FerroqError as exc:
        return [exc]
    finally:
        assert time.monotonic() - started < 10
    own_apps.append(app)
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ferroq.FerroqError) as info:
            if call == "create_job":
                app.create_job("q", "a")
            else:
                getattr(app, call)()
        assert time.monotonic() - started < 10, f"{call} took too long to fail"
        errors.append(info.value)
    return errors


def test_missing_directory_is_a_configuration_error(tmp_path, own_apps):
    missing = tmp_path / "no" / "such" / "dir"
    errors = _first_use_error(f"sqlite:///{missing / 'jobs.db'}", own_apps)
    for exc in errors:
        assert isinstance(exc, ferroq.ConfigurationError), repr(exc)
        assert str(missing) in str(exc), str(exc)
    assert not (tmp_path / "no").exists(), "ferroq created the missing directory"

    proc = ferroq_cli("migrate", "--database-url", f"sqlite:///{missing / 'jobs.db'}", timeout=30)
    assert proc.returncode != 0
    assert "ConfigurationError" in proc.stderr and str(missing) in proc.stderr, proc.stderr


def test_path_that_is_a_directory_fails_clearly(tmp_path, own_apps):
    directory = tmp_path / "a_directory.db"
    directory.mkdir()
    errors = _first_use_error(f"sqlite:///{directory}", own_apps)
    for exc in errors:
        assert isinstance(exc, (ferroq.DatabaseError, ferroq.ConfigurationError)), repr(exc)


def test_read_only_database_file_fails_clearly(tmp_path, own_apps):
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: chmod 0o444 does not stop root from writing the file "
            "(the path-is-a-directory case is covered by "
            "test_path_that_is_a_directory_fails_clearly)"
        )
    path = tmp_path / "jobs.db"
    proc = ferroq_cli("migrate", "--database-url", f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for leftover in tmp_path.glob("jobs.db-*"):
        leftover.unlink()
    path.chmod(0o444)
    errors = _first_use_error(f"sqlite:///{path}", own_apps, calls=("create_job",))
    for exc in errors:
        assert isinstance(exc, (ferroq.DatabaseError, ferroq.ConfigurationError)), repr(exc)


# --- transactional enqueue beside the engine ------------------------------------------------------


def test_engine_write_while_a_callers_transaction_is_open_loses_nothing(app_factory, database_url, db):
    # The caller's sqlite3 transaction holds the file's write lock; a write by the engine in
    # the same process must wait for it (or fail), never write beside it.
    app = app_factory()
    other: dict = {}

    def create_other():
        try:
            other["job"] = app.create_job("r", "a", {"n": 2})
        except BaseException as exc:  # noqa: BLE001 - reported below
            other["error"] = exc

    with transaction_connection(database_url) as conn:
        mine = app.create_job("q", "a", {"n": 1}, connection=conn)
        writer = threading.Thread(target=create_other)
        writer.start()
        writer.join(0.5)
        conn.commit()
    writer.join(70)
    assert not writer.is_alive()
    assert "job" in other, f"the engine's write failed: {other.get('error')!r}"
    assert other["job"].id != mine.id, "two jobs were given the same id"
    jobs = {j.id: (j.queue, j.params) for j in app.list_jobs()}
    assert jobs == {mine.id: ("q", {"n": 1}), other["job"].id: ("r", {"n": 2})}, "a committed job was lost"
    assert count_jobs(db) == 2


# --- several processes on one file -------------------------------------------------------------------

#: Enqueues argv[2] jobs over argv[3] blocking queues, in single creates and batches.
ENQUEUE_MANY = textwrap.dedent(
    """
    import sys, time, ferroq
    app = ferroq.App(sys.argv[1])
    total, queues = int(sys.argv[2]), int(sys.argv[3])
    created = batch = 0
    while created < total:
        size = min(total - created, 1 if batch % 3 == 0 else 20)
        specs = [{"queue": f"q{(created + k) % queues}", "action": "record",
                  "params": {"sleep": 0.002 * ((created + k) % 3)}} for k in range(size)]
        if size == 1:
            app.create_job(specs[0]["queue"], "record", specs[0]["params"])
        else:
            app.create_jobs(specs)
        created += size
        batch += 1
        time.sleep(0.01)
    print("created", created)
    """
)


def _wait_for_banners(processes, workers):
    wait_until(
        lambda: all(" started: database " in processes.output(w) for w in workers),
        timeout=30,
        message=processes.describe,
    )


def test_several_processes_on_one_file(app_factory, database_url, ledger, processes, db):
    total, queues = 600, 20
    app_factory()  # schema in place before the processes start
    workers = [processes.worker(TARGET, database_url, TEST_CONCURRENCY=4) for _ in range(3)]
    _wait_for_banners(processes, workers)
    enqueuer = processes.spawn(
        [sys.executable, "-c", ENQUEUE_MANY, database_url, str(total), str(queues)],
        subprocess_env(database_url),
        name="enqueuer",
    )

    assert enqueuer.wait(timeout=120) == 0, processes.describe()
    assert f"created {total}" in processes.output(enqueuer)

    def completed():
        return db.scalar("SELECT count(*) FROM ferroq_jobs WHERE state = 'completed'") == total

    wait_until(
        completed,
        timeout=120,
        interval=0.2,
        message=lambda: (
            f"{db.rows('SELECT state, count(*) AS n FROM ferroq_jobs GROUP BY state')}\n" + processes.describe()
        ),
    )
    assert all(w.poll() is None for w in workers), processes.describe()

    assert count_jobs(db) == total
    errors = db.rows("SELECT id, error FROM ferroq_jobs WHERE error IS NOT NULL")
    assert errors == [], f"jobs recorded errors: {errors[:5]}"
    logs = [
        line
        for p in processes.procs
        for line in processes.output(p).lower().splitlines()
        if "ferroq: worker " not in line
    ]  # the start and stop lines name the host
    assert [line for line in logs if "locked" in line or "busy" in line] == [], processes.describe()

    starts = ledger.starts()
    per_job = Counter(r["job_id"] for r in starts)
    assert len(per_job) == total
    assert [j for j, n in per_job.items() if n != 1] == [], "jobs ran more than once"
    assert len(ledger.finishes()) == total
    assert ledger.overlaps() == [], "two jobs of one blocking queue ran at the same time"
    assert len({r["pid"] for r in starts}) >= 2, "only one worker process ever ran jobs"
    last_insert = db.to_datetime(db.scalar("SELECT max(inserted_at) FROM ferroq_jobs"))
    assert starts[0]["at"] < last_insert, "the workers did not run jobs while jobs were added"

    # FIFO within each queue (the FIFO sequence is the id on SQLite).
    by_queue = defaultdict(list)
    for row in starts:
        by_queue[row["queue"]].append(row["job_id"])
    for queue, ids in by_queue.items():
        assert ids == sorted(ids), f"FIFO violated in {queue}"
    assert db.scalar("PRAGMA integrity_check") == "ok"


# --- a killed worker ------------------------------------------------------------------------------

LEASE_TTL = 2.0


def test_killed_worker_jobs_run_again_on_another_worker(app_factory, database_url, ledger, processes, db):
    # Worker A takes four hanging jobs (one per queue) and is killed mid-job; worker B runs
    # them again once their leases lapse, then each queue's next job.
    producer = app_factory()
    hanging = [producer.create_job(f"q{i}", "first_attempt_hangs") for i in range(4)]
    behind = [producer.create_job(f"q{i}", "record") for i in range(4)]
    a = processes.worker(TARGET, database_url, TEST_LEASE_TTL=LEASE_TTL, TEST_CONCURRENCY=4)
    wait_until(lambda: len(ledger.starts()) == 4, timeout=30, message=processes.describe)
    b = processes.worker(TARGET, database_url, TEST_LEASE_TTL=LEASE_TTL, TEST_CONCURRENCY=4)
    _wait_for_banners(processes, [b])
    # B is idle: every queue's head is running on A.
    assert stays_true(lambda: all(r["pid"] == a.pid for r in ledger.starts()), 0.5)

    killed_at = time.monotonic()
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    done = wait_for_jobs(producer, [j.id for j in hanging + behind], "completed", timeout=30)
    recovery = time.monotonic() - killed_at
    assert recovery < LEASE_TTL + 8, f"jobs came back {recovery:.1f}s after the kill"

    for job in done[:4]:
        runs = [(s["attempt"], s["pid"]) for s in ledger.starts(job.id)]
        assert runs == [(1, a.pid), (2, b.pid)], processes.describe()
        assert job.attempts == 2 and job.result == {"pid": b.pid, "attempt": 2}
    for hung, after in zip(hanging, behind, strict=True):
        [start] = ledger.starts(after.id)
        [finish] = [f for f in ledger.finishes(hung.id) if f["pid"] == b.pid]
        assert start["pid"] == b.pid and start["id"] > finish["id"], (
            f"queue {after.queue}: the next job started before the re-run finished"
        )
    assert b.poll() is None, "the surviving worker exited"
    assert db.scalar("PRAGMA integrity_check") == "ok"
