"""Forked children of a test: run a function in one, and fail fast (not hang CI) if it hangs."""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable

#: Python 3.12+ warns (DeprecationWarning) when a process with threads forks, and pytest runs
#: with -W error. Forking a process that runs ferroq's threads is exactly what the fork tests
#: check is supported, so they ignore this one warning: ``pytest.mark.filterwarnings(...)``.
FORK_WITH_THREADS_WARNING = r"ignore:This process .* is multi-threaded, use of fork\(\):DeprecationWarning"

#: How long a forked child may take before it counts as hung and is killed.
CHILD_TIMEOUT = 60.0


def wait_for_exit(pid: int, timeout: float = CHILD_TIMEOUT) -> int:
    """The exit code of child ``pid``; kills it (SIGKILL) and fails if it runs past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child {pid} hung: killed after {timeout} s")
        time.sleep(0.02)


def run_in_fork(child: Callable[[], object], timeout: float = CHILD_TIMEOUT) -> int:
    """Run ``child()`` in a forked process and return its pid once it has succeeded; fail with
    its traceback if it raised, or if it has not exited within ``timeout`` s."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            os.close(read_end)
            child()
            code = 0
        except BaseException:  # noqa: BLE001 - every failure goes back to the parent
            os.write(write_end, traceback.format_exc().encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        code = wait_for_exit(pid, timeout)
        with os.fdopen(read_end, "rb", closefd=False) as pipe:
            report = pipe.read().decode(errors="replace")
    finally:
        os.close(read_end)
    assert code == 0, f"forked child {pid} exited with {code}:\n{report}"
    return pid
