"""The public :class:`App`: performer registry, enqueueing, workers, listings.

Rules (defaults, value ranges, queue kinds, retry policy) belong to the Rust core
(``_core.Client``); this module coerces Python types into what the core takes
(timedelta -> seconds, aware datetime -> UTC, params -> JSON text or bytes) and keeps what must be
Python: the decorator, signal handling, the context manager.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, overload

from . import _caller_tx, _core
from ._core import Job
from ._executor import Executor, Performer
from ._state import JobState
from ._stats import Stats
from .errors import (
    ConfigurationError,
    InvalidNameError,
    InvalidOptionError,
    InvalidParamsError,
    InvalidScheduleError,
)

__all__ = ["App", "Page", "PeriodicEntry"]

#: Seconds as ferroq takes them: a number or a timedelta.
Seconds = float | int | timedelta

_JOB_OPTIONS = frozenset(
    {
        "scheduled_at",
        "delay",
        "timeout",
        "max_backoff",
        "max_attempts",
        "priority",
        "unique_key",
        "unique_period",
        "unique_states",
    }
)
_FILTERS = frozenset({"queue", "action", "state", "search", "older_than", "order_by", "descending"})

F = TypeVar("F", bound=Callable[..., Any])

#: The Apps of this process, for a forked child to forget the workers it inherited.
_APPS: weakref.WeakSet[App] = weakref.WeakSet()
#: Workers a forked child inherited: kept referenced, never stopped nor freed, since their
#: threads stayed in the parent and their connections are the parent's (the Rust core leaks
#: its inherited runtime and pools the same way).
_INHERITED_WORKERS: list[object] = []


def _forget_inherited_workers() -> None:
    for app in list(_APPS):
        app._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_inherited_workers)


@dataclass(frozen=True)
class Page:
    """One page of a job listing."""

    data: list[Job]
    total: int
    page_number: int
    page_size: int


@dataclass(frozen=True)
class PeriodicEntry:
    """A periodic entry registered on an App, and where its ticks stand on the database clock.

    ``last_tick`` is the latest tick enqueued (or the entry's starting point), None until a
    worker has scheduled the entry; ``next_tick`` is the next one after the database's now."""

    name: str
    schedule: str
    timezone: str | None
    queue: str
    action: str
    last_tick: datetime | None
    next_tick: datetime | None


def _zone_name(timezone_: Any) -> str | None:
    """An IANA zone name: a string, or a ``zoneinfo.ZoneInfo`` (its key); the core checks it."""
    if timezone_ is None or isinstance(timezone_, str):
        return timezone_
    key = getattr(timezone_, "key", None)
    if isinstance(key, str):
        return key
    raise ConfigurationError(f"timezone must be an IANA name such as 'Europe/Paris', got {timezone_!r}")


def _seconds(name: str, value: Any, error: type[Exception] = ConfigurationError) -> float:
    """``value`` (a number or a timedelta) as float seconds; its range is the core's to check."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            # An integer beyond any float: infinite, which the core refuses as it refuses inf.
            return math.inf if value > 0 else -math.inf
    raise error(f"{name} must be a number of seconds or a timedelta, got {value!r}")


def _optional_seconds(name: str, value: Any, error: type[Exception] = ConfigurationError) -> float | None:
    return None if value is None else _seconds(name, value, error)


#: What the core can take as an integer at all; its own, narrower ranges are checked there.
_INT64 = range(-(2**63), 2**63)


def _integer(name: str, value: Any, error: type[Exception] = InvalidOptionError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an integer, got {value!r}")
    if value not in _INT64:
        raise error(f"{name} {value} is out of range")
    return value


def _optional_integer(name: str, value: Any, error: type[Exception] = InvalidOptionError) -> int | None:
    return None if value is None else _integer(name, value, error)


def _text(kind: str, value: Any) -> str:
    """A name as text the core can take (no lone surrogates); its length is checked there."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} name must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"{kind} name is not valid Unicode (a lone surrogate): {value!r}") from None
    return value


def _optional_queue_list(value: Any) -> list[str] | None:
    """Queue names or patterns as a list; a lone string is refused, not split into letters."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"only_queues must be a list of queue names or patterns, got {value!r}")
    queues = list(value)
    for queue in queues:
        if not isinstance(queue, str):
            raise ConfigurationError(f"only_queues must hold queue names or patterns as strings, got {queue!r}")
    return queues


def _params(params: Any) -> str | bytes:
    """Params as the core takes them: bytes-like params (``bytes``, ``bytearray``,
    ``memoryview``) as ``bytes``, stored as given; anything else as JSON text."""
    if isinstance(params, bytes):
        return params
    if isinstance(params, (bytearray, memoryview)):
        return bytes(params)
    return _params_json(params)


#: json.dumps with these options, built once: dumps() builds an encoder per call when given any.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _params_json(params: Any) -> str:
    try:
        text = _JSON.encode({} if params is None else params)
    except (TypeError, ValueError) as exc:
        raise InvalidParamsError(f"params must be JSON-serializable: {exc}") from None
    # Scanned, not encoded: encoding would copy a large payload only to throw the copy away.
    if _LONE_SURROGATE.search(text):
        raise InvalidParamsError("params contain text that is not valid Unicode (a lone surrogate)")
    return text


#: A UTF-16 surrogate on its own: text that has no UTF-8 form.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _utc(scheduled_at: Any) -> datetime | None:
    if scheduled_at is None:
        return None
    if not isinstance(scheduled_at, datetime):
        raise InvalidScheduleError(f"scheduled_at must be a datetime, got {scheduled_at!r}")
    if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
        raise InvalidScheduleError("scheduled_at must be timezone-aware (naive datetimes are ambiguous)")
    try:
        return scheduled_at.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidScheduleError(f"scheduled_at {scheduled_at} is beyond the calendar in UTC") from None


def _job_spec(
    queue: Any,
    action: Any,
    params: Any = None,
    *,
    scheduled_at: Any = None,
    delay: Any = None,
    timeout: Any = None,
    max_backoff: Any = None,
    max_attempts: Any = None,
    priority: Any = None,
    unique_key: Any = None,
    unique_period: Any = None,
    unique_states: Any = None,
) -> _core.JobSpec:
    """One job as the core takes it; options left as None get the core's defaults."""
    if unique_key is not None or unique_period is not None or unique_states is not None:
        return _core.JobSpec(
            _text("queue", queue),
            _text("action", action),
            _params(params),
            _utc(scheduled_at),
            _optional_seconds("delay", delay, InvalidScheduleError),
            _optional_seconds("timeout", timeout, InvalidOptionError),
            _optional_seconds("max_backoff", max_backoff, InvalidOptionError),
            _optional_integer("max_attempts", max_attempts),
            _optional_integer("priority", priority),
            _unique_key(unique_key),
            _optional_seconds("unique_period", unique_period, InvalidOptionError),
            _states_option("unique_states", unique_states),
        )
    # Positional: bulk enqueue builds one per job, and keyword parsing costs more.
    return _core.JobSpec(
        _text("queue", queue),
        _text("action", action),
        _params(params),
        _utc(scheduled_at),
        _optional_seconds("delay", delay, InvalidScheduleError),
        _optional_seconds("timeout", timeout, InvalidOptionError),
        _optional_seconds("max_backoff", max_backoff, InvalidOptionError),
        _optional_integer("max_attempts", max_attempts),
        _optional_integer("priority", priority),
    )


def _unique_key(value: Any) -> str | None:
    """A unique key as text the core can take; its rules are checked there."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOptionError(f"unique_key must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidOptionError(f"unique_key is not valid Unicode (a lone surrogate): {value!r}") from None
    return value


def _states_option(name: str, value: Any) -> list[str] | None:
    """State names (or JobStates) as a list; a lone string is refused, not split into letters."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidOptionError(f"{name} must be a list of job states, got {value!r}")
    return [str(s.value) if isinstance(s, JobState) else _state_name(name, s) for s in value]


def _state_name(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidOptionError(f"{name} must hold job state names, got {value!r}")
    return value


def _job_specs(jobs: Iterable[Mapping[str, Any]]) -> list[_core.JobSpec]:
    specs = []
    for index, item in enumerate(jobs):
        if not isinstance(item, Mapping):
            raise InvalidOptionError(f"job #{index} must be a mapping of create_job arguments, got {item!r}")
        unknown = set(item) - _JOB_OPTIONS - {"queue", "action", "params"}
        if unknown:
            raise InvalidOptionError(f"job #{index} has unknown options: {sorted(unknown)}")
        if "queue" not in item or "action" not in item:
            raise InvalidOptionError(f"job #{index} needs a queue and an action")
        specs.append(_job_spec(**item))
    return specs


def _check_callable(role: str, fn: Callable[..., Any], expected: str, arguments: int) -> None:
    """Refuse a function that cannot be called with ``arguments`` positional arguments."""
    if not callable(fn):
        raise ConfigurationError(f"the {role} must be callable, got {fn!r}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to check (some builtins and C functions)
    try:
        signature.bind(*([None] * arguments))
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ConfigurationError(
            f"the {role} is called as {name}{expected}, but {name}{signature} cannot take that: {exc}"
        ) from None


def _states(state: str | Sequence[str] | None) -> list[str] | None:
    """State filters as names (a JobState is a str, so both kinds pass)."""
    if state is None:
        return None
    if isinstance(state, str):
        return [JobState(state).value if isinstance(state, JobState) else state]
    return [str(s.value) if isinstance(s, JobState) else str(s) for s in state]


class App:
    """A job queue bound to one database and one scope.

    Every queue not named in ``queues`` is a *blocking* queue: one job at a time across all
    workers, FIFO by (scheduled_at, sequence), and a failing job blocks its queue until it
    succeeds or runs out of attempts. Queues in ``queues`` run up to their limit at once, in
    priority order, and a failure does not block them.

    Options left as ``None`` take ferroq's defaults: ``database_url`` from
    ``$FERROQ_DATABASE_URL``, else ``sqlite:///ferroq.db``; scope ``"default"``; poll every
    60 s; 10 jobs at once, with as many claimed ahead (at most 100; ``prefetch=0`` turns
    claiming ahead off), each handed back if it waits ``reservation_timeout`` (2 s) for a free
    slot; 30 s leases; completed jobs kept 7 days and cleaned every
    ``cleanup_interval`` (``None`` turns the cleanup off); a graceful stop waits 30 s.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        scope: str | None = None,
        poll_interval: Seconds | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        reservation_timeout: Seconds | None = None,
        queues: Mapping[str, int] | None = None,
        only_queues: Iterable[str] | None = None,
        job_retention: Seconds | None = None,
        cleanup_interval: Seconds | None = _core.DEFAULT_CLEANUP_INTERVAL,
        lease_ttl: Seconds | None = None,
        max_params_size: int | None = None,
        stop_timeout: Seconds | None = None,
        connect_timeout: Seconds | None = None,
        statement_timeout: Seconds | None = None,
        wakeup_interval: Seconds | None = None,
        worker_name: str | None = None,
    ) -> None:
        if database_url is not None and not isinstance(database_url, str):
            raise ConfigurationError(f"database_url must be a string, got {database_url!r}")
        concurrent: dict[str, int] = {}
        for queue, limit in dict(queues or {}).items():
            if not isinstance(queue, str):
                raise ConfigurationError(f"queues maps queue names to limits, got the key {queue!r}")
            concurrent[queue] = _integer(f"the limit of queue {queue!r}", limit, ConfigurationError)
        self._client = _core.Client(
            database_url,
            scope=None if scope is None else _text("scope", scope),
            queues=concurrent,
            only_queues=_optional_queue_list(only_queues),
            max_params_size=_optional_integer("max_params_size", max_params_size, ConfigurationError),
            connect_timeout=_optional_seconds("connect_timeout", connect_timeout),
            statement_timeout=_optional_seconds("statement_timeout", statement_timeout),
            wakeup_interval=_optional_seconds("wakeup_interval", wakeup_interval),
            concurrency=_optional_integer("concurrency", concurrency, ConfigurationError),
            prefetch=_optional_integer("prefetch", prefetch, ConfigurationError),
            reservation_timeout=_optional_seconds("reservation_timeout", reservation_timeout),
            poll_interval=_optional_seconds("poll_interval", poll_interval),
            lease_ttl=_optional_seconds("lease_ttl", lease_ttl),
            cleanup_interval=_optional_seconds("cleanup_interval", cleanup_interval),
            job_retention=_optional_seconds("job_retention", job_retention),
            stop_timeout=_optional_seconds("stop_timeout", stop_timeout),
            worker_name=None if worker_name is None else _text("worker", worker_name),
        )
        self._performers: dict[str, Performer] = {}
        self._worker: _core.WorkerHandle | None = None
        #: The worker a stop() is waiting for, so that a second signal can hurry it.
        self._stopping: _core.WorkerHandle | None = None
        self._hurry_requested = False
        #: Stopped workers still holding jobs whose performer did not return (see stop()).
        self._unstoppable_workers: list[_core.WorkerHandle] = []
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        _APPS.add(self)

    # -- configuration, as the core resolved it ----------------------------------------------

    @property
    def database_url(self) -> str:
        return self._client.database_url

    @property
    def scope(self) -> str:
        return self._client.scope

    @property
    def queues(self) -> dict[str, int]:
        """The concurrent queues and their limits."""
        return self._client.queues

    @property
    def only_queues(self) -> list[str] | None:
        """The queues (names or ``prefix*`` patterns) this App's workers serve; None: all.
        A change applies to workers started later."""
        return self._client.only_queues

    @only_queues.setter
    def only_queues(self, value: Iterable[str] | None) -> None:
        self._client.only_queues = _optional_queue_list(value)

    @property
    def concurrency(self) -> int:
        """Jobs a worker of this App runs at once; a change applies to workers started later."""
        return self._client.concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        self._client.concurrency = _integer("concurrency", value, ConfigurationError)

    @property
    def prefetch(self) -> int:
        """Jobs a worker claims ahead beyond its running ones: a freed slot is refilled from
        them while the next claim is under way. They hold their leases and show as running."""
        return self._client.prefetch

    @property
    def reservation_timeout(self) -> float:
        """How long a job claimed ahead waits for a free slot before it is handed back."""
        return self._client.reservation_timeout

    @property
    def poll_interval(self) -> float:
        return self._client.poll_interval

    @property
    def lease_ttl(self) -> float:
        return self._client.lease_ttl

    @property
    def cleanup_interval(self) -> float | None:
        return self._client.cleanup_interval

    @property
    def job_retention(self) -> float:
        return self._client.job_retention

    @property
    def stop_timeout(self) -> float:
        return self._client.stop_timeout

    @property
    def worker_name(self) -> str:
        return self._client.worker_name

    def __repr__(self) -> str:
        return f"<ferroq.App scope={self.scope!r} performers={sorted(self._performers)}>"

    # -- performers ---------------------------------------------------------------------------

    @overload
    def performer(self, action: F, /) -> F: ...
    @overload
    def performer(
        self,
        action: str | None = None,
        *,
        backoff: Callable[[Job], float] | None = None,
        on_failure: Callable[[Job, str], Any] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
    ) -> Callable[[F], F]: ...
    def performer(
        self,
        action: str | Callable[..., Any] | None = None,
        *,
        backoff: Callable[[Job], float] | None = None,
        on_failure: Callable[[Job, str], Any] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
    ) -> Any:
        """Register the function that performs jobs of ``action`` (sync or ``async def``).

        ``@app.performer`` alone uses the function's name as the action.
        ``backoff(job) -> seconds`` replaces the default delay after a failed attempt;
        ``on_failure(job, error)`` is called once when the job runs out of attempts.
        ``priority``, ``max_attempts``, ``timeout`` and ``max_backoff`` are the defaults of this
        action's jobs created by this App: a ``create_job`` argument still wins. Functions that
        cannot take the arguments they will be given are refused here, not at run time.
        """

        def register(fn: F, name: str | None) -> F:
            if not callable(fn):
                raise ConfigurationError(f"performer for {name!r} must be callable")
            name = _text("action", name or fn.__name__)
            _check_callable(f"performer of {name!r}", fn, "(job)", 1)
            if backoff is not None:
                _check_callable(f"backoff of {name!r}", backoff, "(job)", 1)
            if on_failure is not None:
                _check_callable(f"on_failure of {name!r}", on_failure, "(job, error)", 2)
            self._client.set_performer_defaults(
                name,
                timeout=_optional_seconds("timeout", timeout, InvalidOptionError),
                max_backoff=_optional_seconds("max_backoff", max_backoff, InvalidOptionError),
                max_attempts=_optional_integer("max_attempts", max_attempts),
                priority=_optional_integer("priority", priority),
            )
            self._performers[name] = Performer(name, fn, inspect.iscoroutinefunction(fn), backoff, on_failure)
            return fn

        if callable(action):
            return register(action, None)
        return lambda fn: register(fn, action)

    # -- periodic jobs ------------------------------------------------------------------------

    @overload
    def periodic(
        self,
        schedule: str,
        *,
        action: str,
        queue: str | None = None,
        params: Any = None,
        timezone: Any = None,
        name: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
    ) -> None: ...
    @overload
    def periodic(
        self,
        schedule: str,
        *,
        action: None = None,
        queue: str | None = None,
        params: Any = None,
        timezone: Any = None,
        name: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
    ) -> Callable[[F], F]: ...
    def periodic(
        self,
        schedule: str,
        *,
        action: str | None = None,
        queue: str | None = None,
        params: Any = None,
        timezone: Any = None,
        name: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
    ) -> Callable[[F], F] | None:
        """Enqueue a job at every tick of ``schedule``, a cron expression: five fields
        (``"*/5 * * * *"``), an alias (``"@hourly"``, ``"@daily"``, ...), or six fields whose
        first is the second (``"*/2 * * * * *"``); ``timezone`` is an IANA name (default UTC).

        As a decorator, the function's jobs are enqueued: its action is the one it is
        registered under with ``@app.performer`` (put ``@app.periodic`` above it), and a function
        not registered yet is registered now under its name. As a plain call, give ``action=``.
        The job goes to ``queue`` (default: the action's name, a blocking queue, so that two
        ticks never run at once) with ``params`` and the job options of ``create_job``, and is
        scheduled at its tick. ``name`` (default: action and schedule) identifies the entry in
        the database; two entries of one App cannot share it. Every running worker of the App
        enqueues the ticks, each exactly once (an entry registered later applies to workers
        started later). A bad expression or time zone raises :class:`ConfigurationError` here."""
        if not isinstance(schedule, str):
            raise ConfigurationError(f"schedule must be a cron expression string, got {schedule!r}")
        zone = _zone_name(timezone)
        entry_name = None if name is None else _text("periodic entry", name)

        def register(action_name: str) -> None:
            spec = _job_spec(
                action_name if queue is None else queue,
                action_name,
                params,
                timeout=timeout,
                max_backoff=max_backoff,
                max_attempts=max_attempts,
                priority=priority,
            )
            self._client.add_periodic(schedule, spec, timezone=zone, name=entry_name)

        if action is not None:
            register(_text("action", action))
            return None

        def decorate(fn: F) -> F:
            registered = next((p.action for p in self._performers.values() if p.fn is fn), None)
            if registered is not None:
                register(registered)
                return fn
            if not callable(fn):
                raise ConfigurationError(f"@app.periodic decorates a performer function, got {fn!r}")
            action_name = _text("action", fn.__name__)
            _check_callable(f"performer of {action_name!r}", fn, "(job)", 1)
            # The entry first: a bad schedule leaves no performer behind.
            register(action_name)
            self.performer(action_name)(fn)
            return fn

        return decorate

    def periodic_entries(self) -> list[PeriodicEntry]:
        """The periodic entries registered on this App, with their last and next ticks as
        the database sees them (a query)."""
        return [PeriodicEntry(*status) for status in self._client.periodic_status()]

    # -- schema -------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create or upgrade ferroq's tables. Idempotent; safe with concurrent callers."""
        return self._client.migrate()

    # -- enqueueing ---------------------------------------------------------------------------

    def create_job(
        self,
        queue: str,
        action: str,
        params: Any = None,
        *,
        scheduled_at: datetime | None = None,
        delay: Seconds | None = None,
        timeout: Seconds | None = None,
        max_backoff: Seconds | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        unique_period: Seconds | None = None,
        unique_states: Sequence[str] | None = None,
        connection: Any = None,
    ) -> Job:
        """Enqueue one job. Options left as None take the defaults: run now, 60 s timeout,
        backoff capped at 24 h, 20 attempts, priority 0.

        With ``unique_key``, the database inserts no second job with that key while one is in
        ``unique_states`` (default: scheduled, available, running, retryable; the list must
        hold those and may add completed, failed, discarded): the existing job is returned
        instead, with ``job.duplicate`` True. ``unique_period`` (whole seconds) makes the key
        unique per window of that length on the database clock instead.

        ``params`` is JSON (dict, list, str, number, bool; None is ``{}``), or bytes: a
        ``bytes``, ``bytearray`` or ``memoryview`` is stored as given and ``job.params`` gives
        it back as ``bytes``.

        With ``connection`` (a connection to the App's database from psycopg, sqlite3,
        SQLAlchemy or Django), the job is inserted in that connection's transaction and exists
        only if it commits; workers hear of it at the commit."""
        spec = _job_spec(
            queue,
            action,
            params,
            scheduled_at=scheduled_at,
            delay=delay,
            timeout=timeout,
            max_backoff=max_backoff,
            max_attempts=max_attempts,
            priority=priority,
            unique_key=unique_key,
            unique_period=unique_period,
            unique_states=unique_states,
        )
        return self._insert([spec], connection)[0]

    def create_jobs(self, jobs: Iterable[Mapping[str, Any]], *, connection: Any = None) -> list[Job]:
        """Enqueue many jobs in one round trip. Each item takes ``create_job``'s arguments."""
        return self._insert(_job_specs(jobs), connection)

    async def acreate_job(
        self, queue: str, action: str, params: Any = None, *, connection: Any = None, **options: Any
    ) -> Job:
        """Awaitable ``create_job``; ``connection`` may also be an asyncio connection (psycopg
        ``AsyncConnection``, asyncpg, aiosqlite, SQLAlchemy ``AsyncConnection``/``AsyncSession``)."""
        unknown = set(options) - _JOB_OPTIONS
        if unknown:
            raise InvalidOptionError(f"unknown job options: {sorted(unknown)}")
        return (await self._ainsert([_job_spec(queue, action, params, **options)], connection))[0]

    async def acreate_jobs(self, jobs: Iterable[Mapping[str, Any]], *, connection: Any = None) -> list[Job]:
        """Awaitable ``create_jobs``."""
        return await self._ainsert(_job_specs(jobs), connection)

    def _insert(self, specs: list[_core.JobSpec], connection: Any) -> list[Job]:
        if connection is None:
            return self._client.insert_jobs(specs)
        jobs: list[Job] = _caller_tx.execute(connection, self._client.caller_insert(specs))
        return jobs

    async def _ainsert(self, specs: list[_core.JobSpec], connection: Any) -> list[Job]:
        if connection is None:
            return await self._client.ainsert_jobs(specs)
        jobs: list[Job] = await _caller_tx.aexecute(connection, self._client.caller_insert(specs))
        return jobs

    # -- workers ------------------------------------------------------------------------------

    def _start_worker(self, drain: bool) -> tuple[_core.WorkerHandle, Executor]:
        executor = Executor(self._performers, self.concurrency)
        # The worker claims only jobs it has a performer for; others wait for a worker that does.
        handle = self._client.start_worker(executor, sorted(self._performers), drain=drain)
        executor.bind(handle)
        return handle, executor

    def start(self) -> None:
        """Start a worker on background threads. Jobs run until :meth:`stop`."""
        with self._lock:
            if self._worker is not None:
                raise ConfigurationError("this App's worker is already running")
            self._worker, self._executor = self._start_worker(drain=False)

    def stop(self, timeout: Seconds | None = None) -> list[int]:
        """Stop claiming, let running jobs finish within ``timeout`` (default ``stop_timeout``),
        then interrupt the rest and put them back in their queue without using an attempt.

        Returns within ``timeout`` plus 3 seconds. Returns the ids of the jobs whose performer
        did not return even when interrupted (stuck in a C call, say): those jobs are not put
        back, since they may still be worked on. Their leases stay renewed, and their outcomes
        are written when they return; only the end of this process releases them."""
        with self._lock:
            worker, executor = self._worker, self._executor
            self._worker = self._executor = None
        if worker is None:
            return []
        assert executor is not None
        self._stopping = worker
        if self._hurry_requested:
            worker.hurry()
        try:
            unstoppable = worker.stop(_optional_seconds("timeout", timeout))
        except ConfigurationError:
            # The timeout was refused before anything stopped: the worker runs on, still ours.
            with self._lock:
                self._worker, self._executor = worker, executor
            raise
        except BaseException:
            executor.close()
            raise
        finally:
            self._stopping = None
            self._hurry_requested = False
        executor.close(keep_loop=bool(unstoppable))
        if unstoppable:
            self._unstoppable_workers.append(worker)
        return unstoppable

    def _hurry_stop(self) -> None:
        """Cut a stop in progress short (a second signal); a no-op when none runs."""
        self._hurry_requested = True  # also when the signal comes just before stop() begins
        stopping = self._stopping
        if stopping is not None:
            stopping.hurry()

    def close(self) -> None:
        """Stop the worker if one runs and close the connection pool. The App stays usable:
        a later call opens a new pool. While a performer that :meth:`stop` could not stop
        still runs, the pool stays open: its job's lease is renewed through it."""
        self.stop()
        # A stopped worker whose performer has not returned still renews that job's lease
        # through this pool, whichever stop() left it behind.
        self._unstoppable_workers = [w for w in self._unstoppable_workers if w.in_flight]
        if self._unstoppable_workers:
            return
        self._client.close()

    def _after_fork_in_child(self) -> None:
        """In a forked child: a worker started before the fork runs on in the parent only, so
        this App has none (it may start its own)."""
        if self._worker is not None:
            _INHERITED_WORKERS.append((self._worker, self._executor))
        self._worker = self._executor = None
        # The parent's stopped workers are the parent's to wait for; kept, never freed here.
        _INHERITED_WORKERS.extend((worker, None) for worker in self._unstoppable_workers)
        self._unstoppable_workers = []
        # A thread of the parent may have held it at the fork; that thread is not here.
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether a worker started with :meth:`start` is running."""
        return self._worker is not None

    def __enter__(self) -> App:  # noqa: PYI034 - Self needs Python 3.11
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self) -> None:
        """Run a worker in the foreground until SIGINT or SIGTERM, then stop gracefully.
        A second signal during the stop interrupts it."""
        stop_requested = threading.Event()
        installed: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def request_stop(signum: int, frame: Any) -> None:
                if stop_requested.is_set():
                    # A second signal cuts the graceful stop short: running performers are
                    # interrupted and their jobs released without using an attempt.
                    self._hurry_stop()
                stop_requested.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, request_stop)
        try:
            self.start()
            while not stop_requested.wait(0.2):
                pass
        finally:
            try:
                self.stop()
            finally:
                for sig, previous in installed.items():
                    signal.signal(sig, previous)

    def drain(self) -> int:
        """Run every job that is due now, then return how many attempts ran (tests, scripts).
        Jobs that become due later (retries, scheduled jobs) are left for a later call."""
        worker, executor = self._start_worker(drain=True)
        try:
            worker.wait_drained()
        finally:
            try:
                worker.stop()
            finally:
                executor.close()
        return worker.processed

    def sqlite_synchronous(self) -> str | None:
        """SQLite: how durable an acknowledged commit is, as ferroq's own connections to the
        file read ``PRAGMA synchronous`` back: ``"full"`` (the default: it survives an OS
        crash or power loss) or ``"normal"`` (``?synchronous=normal`` in the URL). None on
        PostgreSQL. Opens the database if it is not open yet."""
        return self._client.sqlite_synchronous()

    def notify(self) -> None:
        """Wake this scope's workers, in this process and every other, to look for jobs now."""
        self._client.notify()

    # -- inspection and control ---------------------------------------------------------------

    def get_job(self, id: int) -> Job | None:
        """The job with this id in the App's scope, or None."""
        return self._client.get_job(_integer("id", id))

    def list_jobs(
        self,
        queue: str | None = None,
        action: str | None = None,
        state: str | Sequence[str] | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
        order_by: str = "id",
        descending: bool = False,
        older_than: Seconds | None = None,
    ) -> list[Job]:
        """Jobs of this scope matching every filter given. ``search`` is a case-insensitive
        substring of the action, the params (as JSON text; bytes params are not searched) or
        the error. ``older_than`` (seconds or a timedelta): finished jobs that finished that
        long ago, other jobs inserted that long ago."""
        return self._client.list_jobs(
            queue,
            action,
            _states(state),
            search,
            order_by,
            bool(descending),
            _integer("limit", limit),
            _integer("offset", offset),
            _optional_seconds("older_than", older_than, InvalidOptionError),
        )

    def paginate_jobs(self, page_size: int = 20, page_number: int = 1, **filters: Any) -> Page:
        """One page of :meth:`list_jobs` (pages count from 1) with the total number of matches."""
        unknown = set(filters) - _FILTERS
        if unknown:
            raise InvalidOptionError(f"unknown filters: {sorted(unknown)}")
        data, total = self._client.paginate_jobs(
            _integer("page_size", page_size),
            _integer("page_number", page_number),
            filters.get("queue"),
            filters.get("action"),
            _states(filters.get("state")),
            filters.get("search"),
            filters.get("order_by", "id"),
            bool(filters.get("descending", False)),
            _optional_seconds("older_than", filters.get("older_than"), InvalidOptionError),
        )
        return Page(data=data, total=total, page_number=page_number, page_size=page_size)

    def retry_job(self, id: int) -> Job:
        """Make a waiting, failed or discarded job run again now (with at least one attempt left)."""
        return self._client.retry_job(_integer("id", id))

    def cancel_job(self, id: int) -> Job:
        """Discard a job that has not finished. A running job is cancelled by the worker that
        runs it, which interrupts its performer as a timeout does and ends it ``discarded``
        with the error ``"cancelled while running"`` (no ``on_failure`` hook); it comes back
        still running, ``cancel_requested_at`` set. A finished job raises ``JobStateError``."""
        return self._client.cancel_job(_integer("id", id))

    def stats(self, blocked_limit: int = 50) -> Stats:
        """What each queue of this scope holds (jobs per state, the age of the oldest
        available job) and every blocking queue held by its head, with why: retrying until a
        time, scheduled, running since a time, or no performer registered here for its action
        (judged only when this App has performers). At most ``blocked_limit`` held queues are
        listed; ``blocked_total`` counts them all."""
        performers = sorted(self._performers) or None
        stats: Stats = json.loads(self._client.stats_json(performers, _integer("blocked_limit", blocked_limit)))
        return stats

    # -- bulk changes: every job a filter of list_jobs matches, in one statement ----------------

    def retry_jobs(
        self,
        *,
        queue: str | None = None,
        action: str | None = None,
        state: str | Sequence[str] | None = None,
        search: str | None = None,
        older_than: Seconds | None = None,
    ) -> int:
        """Run again now every matching job that is scheduled, retryable, failed or discarded
        (as :meth:`retry_job`; by default all of those states): how the dead letter is
        redriven. Returns how many jobs changed."""
        return self._bulk_change("retry", queue, action, state, search, older_than)

    def cancel_jobs(
        self,
        *,
        queue: str | None = None,
        action: str | None = None,
        state: str | Sequence[str] | None = None,
        search: str | None = None,
        older_than: Seconds | None = None,
    ) -> int:
        """Cancel every matching job that has not finished, as :meth:`cancel_job`: waiting ones
        (scheduled, available, retryable) are discarded at once and their blocking queues move
        on; running ones are ended ``discarded`` by their workers, which interrupt them.
        Returns how many jobs were cancelled or asked to be."""
        return self._bulk_change("cancel", queue, action, state, search, older_than)

    def delete_jobs(
        self,
        *,
        queue: str | None = None,
        action: str | None = None,
        state: str | Sequence[str] | None = None,
        search: str | None = None,
        older_than: Seconds | None = None,
    ) -> int:
        """Delete every matching finished job (completed, failed or discarded): how the dead
        letter is purged. Jobs that have not finished are never deleted; cancel them first.
        Returns how many jobs were deleted."""
        return self._bulk_change("delete", queue, action, state, search, older_than)

    def _bulk_change(
        self,
        change: str,
        queue: str | None,
        action: str | None,
        state: str | Sequence[str] | None,
        search: str | None,
        older_than: Seconds | None,
    ) -> int:
        return self._client.bulk_change(
            change,
            queue,
            action,
            _states(state),
            search,
            _optional_seconds("older_than", older_than, InvalidOptionError),
        )

    def pause_queue(self, queue: str) -> None:
        """Pause a queue, or every queue a ``prefix*`` pattern matches, across all workers and
        restarts: its running jobs finish, none starts until :meth:`resume_queue`. Jobs a
        worker claimed ahead before the pause (``prefetch``; shown as running) may still start
        within ``reservation_timeout``."""
        self._client.pause_queue(queue)

    def resume_queue(self, queue: str) -> None:
        """Undo :meth:`pause_queue` with the same name or pattern, and wake the workers."""
        self._client.resume_queue(queue)

    def paused_queues(self) -> list[tuple[str, datetime]]:
        """The paused names and patterns of this scope, with when each was paused."""
        return self._client.paused_queues()
