"""Assertions for tests of code that enqueues ferroq jobs."""

from __future__ import annotations

from typing import Any

__all__ = ["assert_job_created", "refute_job_created"]


def _matches(params: Any, expected: Any) -> bool:
    """``expected`` is a subset of ``params``: every key given must be present and equal."""
    if isinstance(expected, dict) and isinstance(params, dict):
        return all(key in params and _matches(params[key], value) for key, value in expected.items())
    return bool(params == expected)


def _find(app: Any, queue: str | None, action: str | None, params: Any) -> list[Any]:
    found: list[Any] = []
    offset = 0
    while True:
        page = app.list_jobs(queue=queue, action=action, limit=500, offset=offset)
        found.extend(job for job in page if params is None or _matches(job.params, params))
        if len(page) < 500:
            return found
        offset += 500


def _describe(queue: str | None, action: str | None, params: Any) -> str:
    parts = [
        f"{name}={value!r}"
        for name, value in (("queue", queue), ("action", action), ("params", params))
        if value is not None
    ]
    return ", ".join(parts) or "any job"


def assert_job_created(app: Any, queue: str | None = None, action: str | None = None, params: Any = None) -> Any:
    """Return the first job of ``app``'s scope matching queue, action and params (a subset
    match); raise AssertionError when there is none."""
    found = _find(app, queue, action, params)
    if not found:
        raise AssertionError(
            f"expected a job with {_describe(queue, action, params)} in scope {app.scope!r}, found none"
        )
    return found[0]


def refute_job_created(app: Any, queue: str | None = None, action: str | None = None, params: Any = None) -> None:
    """Raise AssertionError if ``app``'s scope has a job matching queue, action and params."""
    found = _find(app, queue, action, params)
    if found:
        raise AssertionError(
            f"expected no job with {_describe(queue, action, params)}, found {len(found)}: {found[:3]}"
        )
