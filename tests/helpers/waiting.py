"""Bounded waits: poll a condition until it holds, or fail with what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


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
