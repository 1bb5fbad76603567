"""Every exception ferroq raises. All derive from :class:`FerroqError`.

Bad input raises a specific subclass before anything is written; a database that cannot be
reached or a failed statement raises :class:`DatabaseError`.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "FerroqError",
    "InvalidJobError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidParamsError",
    "InvalidScheduleError",
    "JobNotFoundError",
    "JobStateError",
    "JobTimeoutError",
    "ParamsTooLargeError",
    "UnsupportedDatabaseError",
]


class FerroqError(Exception):
    """Root of every ferroq exception."""


class ConfigurationError(FerroqError):
    """An App option or the database URL is unusable."""


class UnsupportedDatabaseError(ConfigurationError):
    """The database URL names a scheme ferroq has no store for."""


class InvalidJobError(FerroqError, ValueError):
    """A job could not be created from what was given; nothing was written."""


class InvalidNameError(InvalidJobError):
    """A queue, action or scope name is not a non-empty string of at most 255 characters."""


class InvalidParamsError(InvalidJobError):
    """Params (or a performer's result) cannot be stored as JSON."""


class ParamsTooLargeError(InvalidJobError):
    """Params (their JSON text, or bytes params themselves) are longer than ``App(max_params_size=...)`` allows."""


class InvalidScheduleError(InvalidJobError):
    """A naive datetime, a negative delay, or both ``scheduled_at`` and ``delay``."""


class InvalidOptionError(InvalidJobError):
    """A job option out of range: timeout, max_attempts, max_backoff, priority, listing options."""


class DatabaseError(FerroqError):
    """The database could not be reached in time, or a statement failed."""


class JobNotFoundError(FerroqError, LookupError):
    """No job with that id in the App's scope."""


class JobStateError(FerroqError):
    """The job's state does not allow the operation (e.g. cancelling a running job)."""


class JobTimeoutError(FerroqError):
    """Raised inside a sync performer's thread when its job ran past its timeout."""
