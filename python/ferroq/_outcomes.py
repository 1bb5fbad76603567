"""Values a performer may return to say how its attempt ended, other than success."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Discard", "Fail", "Snooze"]


@dataclass(frozen=True)
class Fail:
    """The attempt failed: retried after the backoff, like raising an exception."""

    reason: str = "failed"


@dataclass(frozen=True)
class Snooze:
    """Run the job again after ``seconds``. The attempt counts toward ``max_attempts`` (as in
    Bedrock): a job that snoozes on its last attempt ends ``failed``. With
    ``count_attempt=False`` the attempt is given back (the job may snooze forever), and the
    job waits at least one second, so it cannot spin."""

    seconds: float | timedelta
    count_attempt: bool = True

    @property
    def delay(self) -> float:
        """The snooze in seconds (the engine treats a negative one as zero)."""
        return self.seconds.total_seconds() if isinstance(self.seconds, timedelta) else float(self.seconds)


@dataclass(frozen=True)
class Discard:
    """End the job now as ``discarded``; it is not retried."""

    reason: str = "discarded"
