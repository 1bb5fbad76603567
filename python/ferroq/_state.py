"""Job states, as stored in the ``state`` column. The engine owns the list; this enum spells
it out for type checkers and is checked against it on import."""

from __future__ import annotations

import enum

from . import _core

__all__ = ["JobState"]


class JobState(str, enum.Enum):
    """Lifecycle of a job. Members compare equal to their names: ``JobState.FAILED == "failed"``."""

    SCHEDULED = "scheduled"  # waiting for its scheduled time
    AVAILABLE = "available"  # ready to run
    RUNNING = "running"  # an attempt holds its lease
    RETRYABLE = "retryable"  # an attempt failed; waits for its backoff
    COMPLETED = "completed"  # done
    FAILED = "failed"  # attempts exhausted (dead letter); kept, retryable with App.retry_job
    DISCARDED = "discarded"  # ended without retry: Discard returned, or cancelled

    def __str__(self) -> str:
        return self.value


if tuple(JobState) != _core.JOB_STATES:  # pragma: no cover - a build mixing two versions
    raise ImportError(f"ferroq.JobState {tuple(JobState)} does not match the engine's states {_core.JOB_STATES}")
