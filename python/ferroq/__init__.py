"""ferroq: a persistent job queue for Python with a Rust engine.

Blocking FIFO queues (one job at a time, a failing job blocks its queue) and concurrent
queues, on PostgreSQL, with transactional enqueue, leases and batched acknowledgements.
"""

from __future__ import annotations

from . import testing
from ._app import App, Page, PeriodicEntry
from ._core import Job, __version__
from ._outcomes import Discard, Fail, Snooze
from ._state import JobState
from .errors import (
    ConfigurationError,
    DatabaseError,
    FerroqError,
    InvalidJobError,
    InvalidNameError,
    InvalidOptionError,
    InvalidParamsError,
    InvalidScheduleError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    ParamsTooLargeError,
    UnsupportedDatabaseError,
)

__all__ = [
    "App",
    "ConfigurationError",
    "DatabaseError",
    "Discard",
    "Fail",
    "FerroqError",
    "InvalidJobError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidParamsError",
    "InvalidScheduleError",
    "Job",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "JobTimeoutError",
    "Page",
    "ParamsTooLargeError",
    "PeriodicEntry",
    "Snooze",
    "UnsupportedDatabaseError",
    "__version__",
    "testing",
]
