"""A SQLite file that cannot be written: read-only, or on a full disk.

Enqueueing raises ``ferroq.DatabaseError`` saying what is wrong and writes nothing (a bulk
insert is all or nothing); a worker whose outcomes cannot be written while the disk is full
loses no job and runs none twice: once space is freed, every job completes exactly once.

The faults are real filesystems, not emulated: a read-only bind mount of the test's directory
and a small tmpfs filled up with a ballast file. Both need root (mount); without it, read-only
falls back to file modes (which bind a non-root user), and the disk-full test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import RawDb, count_jobs, wait_until

import ferroq

pytestmark = pytest.mark.only_on("sqlite")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    # Lazy: a connection the test has not closed yet must not keep the mount (and the test
    # directory) busy.
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextmanager
def read_only_view(directory: Path):
    """``directory`` as a read-only path: a read-only bind mount as root (root ignores file
    modes), else the directory and its files made read-only."""
    if IS_ROOT:
        view = directory.parent / f"{directory.name}-ro"
        view.mkdir()
        if not _mount("--bind", str(directory), str(view)):
            pytest.skip("cannot bind-mount here (no mount permission)")
        try:
            if not _mount("-o", "remount,bind,ro", str(view)):
                pytest.skip("cannot remount a bind mount read-only here")
            yield view
        finally:
            _umount(view)
        return
    modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield directory
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@contextmanager
def tiny_filesystem(parent: Path, size: str):
    """A tmpfs of ``size`` mounted in ``parent``."""
    if not IS_ROOT:
        pytest.skip("a disk-full filesystem needs root to mount a small tmpfs")
    mount_point = parent / "tiny"
    mount_point.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)):
        pytest.skip("cannot mount a tmpfs here (no mount permission)")
    try:
        yield mount_point
    finally:
        _umount(mount_point)


def fill_up(directory: Path) -> Path:
    """Write a ballast file in ``directory`` until its filesystem has no space left."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
        # The last partial blocks too, so that not even one page fits.
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    assert shutil.disk_usage(directory).free < 4096
    return ballast


def test_read_only_file_refuses_writes_clearly_and_writes_nothing(app_factory, tmp_path):
    directory = tmp_path / "data"
    directory.mkdir()
    writer = app_factory(f"sqlite:///{directory / 'jobs.db'}")
    first = writer.create_job("q", "a", {"n": 0})
    writer.close()

    with read_only_view(directory) as view:
        app = app_factory(f"sqlite:///{view / 'jobs.db'}", migrate=False)
        calls = {
            "create_job": lambda: app.create_job("q", "a", {"n": 1}),
            "create_jobs": lambda: app.create_jobs(
                [{"queue": "q", "action": "a", "params": {"n": n}} for n in (1, 2, 3)]
            ),
        }
        for name, call in calls.items():
            with pytest.raises(ferroq.DatabaseError) as raised:
                call()
            assert "read-only" in str(raised.value) or "readonly" in str(raised.value), (name, raised.value)
        app.close()

    with RawDb.connect(f"sqlite:///{directory / 'jobs.db'}") as db:
        assert [row[0] for row in db.execute("SELECT id FROM ferroq_jobs").fetchall()] == [first.id]


def test_full_disk_refuses_enqueues_whole_and_keeps_every_job(app_factory, tmp_path):
    with tiny_filesystem(tmp_path, "6m") as disk:
        url = f"sqlite:///{disk / 'jobs.db'}"
        app = app_factory(url, concurrency=8, poll_interval=0.2)
        runs: Counter[int] = Counter()
        release = threading.Event()

        @app.performer("a")
        def a(job: ferroq.Job) -> str:
            runs[job.id] += 1
            release.wait(30)
            # A result of its own size: writing the outcomes needs new pages.
            return "r" * 50_000

        jobs = app.create_jobs([{"queue": f"q{i}", "action": "a", "params": {"i": i}} for i in range(16)])
        app.start()
        wait_until(lambda: sum(runs.values()) >= 8, timeout=10, message="the worker did not claim its first jobs")

        ballast = fill_up(disk)
        with RawDb.connect(url) as db:
            before = count_jobs(db)
        calls = {
            "create_job": lambda: app.create_job("q", "a", {"blob": "x" * 200_000}),
            "create_jobs": lambda: app.create_jobs(
                [{"queue": "q", "action": "a", "params": {"blob": "x" * 50_000}} for _ in range(8)]
            ),
        }
        for name, call in calls.items():
            with pytest.raises(ferroq.DatabaseError) as raised:
                call()
            assert "full" in str(raised.value), (name, raised.value)
        with RawDb.connect(url) as db:
            assert count_jobs(db) == before, "a refused enqueue left rows behind"

        # The running jobs finish while nothing can be written; their outcomes wait.
        release.set()
        wait_until(lambda: sum(runs.values()) >= 8, timeout=10)
        time.sleep(1.0)  # the worker tries to write the outcomes, and fails, meanwhile
        with RawDb.connect(url) as db:
            completed_on_full_disk = db.scalar("SELECT count(*) FROM ferroq_jobs WHERE state = 'completed'")
        ballast.unlink()
        wait_until(
            lambda: all(app.get_job(job.id).state == "completed" for job in jobs),
            timeout=30,
            message=lambda: f"not all jobs completed after space was freed: {runs}",
        )
        app.stop()
        assert sorted(runs) == sorted(job.id for job in jobs), "a job was lost"
        assert set(runs.values()) == {1}, f"a job ran twice: {runs}"
        # The fault was real: no outcome could be written while the disk was full.
        assert completed_on_full_disk == 0
