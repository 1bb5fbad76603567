"""The public :class:`App`: configuration, performer registry, enqueueing, workers, listings."""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from . import _core
from ._executor import Executor, Performer
from .errors import (
    ConfigurationError,
    InvalidNameError,
    InvalidOptionError,
    InvalidParamsError,
    InvalidScheduleError,
)

__all__ = ["App", "Page"]

DEFAULT_DATABASE_URL = "sqlite:///ferroq.db"
_JOB_OPTIONS = frozenset(
    {"queue", "action", "params", "scheduled_at", "delay", "timeout", "max_backoff", "max_attempts", "priority"}
)
Seconds = "float | int | timedelta"


@dataclass(frozen=True)
class Page:
    """One page of a job listing."""

    data: list[Any]
    total: int
    page_number: int
    page_size: int


def _seconds(name: str, value: Any, error: type[Exception], *, allow_zero: bool = True) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise error(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise error(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number of seconds, got {value!r}")
    return seconds


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(f"{name} must be an integer, got {value!r}")
    return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(kind: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} name must be a string, got {value!r}")
    if not _is_utf8(value):
        raise InvalidNameError(f"{kind} name is not valid Unicode (a lone surrogate): {value!r}")
    return value


def _job_spec(
    queue: Any,
    action: Any,
    params: Any = None,
    scheduled_at: Any = None,
    delay: Any = None,
    timeout: Any = 60.0,
    max_backoff: Any = 86_400.0,
    max_attempts: Any = 20,
    priority: Any = 0,
) -> tuple[Any, ...]:
    """Check Python types and convert one job to what `_core.Client` takes. Value ranges
    (name lengths, params size, limits) are checked in Rust."""
    try:
        params_json = json.dumps({} if params is None else params, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParamsError(f"params must be JSON-serializable: {exc}") from None
    if not _is_utf8(params_json):
        raise InvalidParamsError("params contain text that is not valid Unicode (a lone surrogate)")
    if scheduled_at is not None:
        if not isinstance(scheduled_at, datetime):
            raise InvalidScheduleError(f"scheduled_at must be a datetime, got {scheduled_at!r}")
        if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
            raise InvalidScheduleError("scheduled_at must be timezone-aware (naive datetimes are ambiguous)")
        scheduled_at = scheduled_at.astimezone(timezone.utc)
    if delay is not None:
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        elif isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise InvalidScheduleError(f"delay must be a number of seconds or a timedelta, got {delay!r}")
        delay = float(delay)
    return (
        _name("queue", queue),
        _name("action", action),
        params_json,
        scheduled_at,
        delay,
        _seconds("timeout", timeout, InvalidOptionError, allow_zero=False),
        _seconds("max_backoff", max_backoff, InvalidOptionError),
        _integer("max_attempts", max_attempts),
        _integer("priority", priority),
    )


def _to_utc(value: Any) -> Any:
    return value.astimezone(timezone.utc) if isinstance(value, datetime) else value


class App:
    """A job queue bound to one database and one scope.

    Every queue not named in ``queues`` is a *blocking* queue: one job at a time across all
    workers, FIFO by (scheduled_at, sequence), and a failing job blocks its queue until it
    succeeds or runs out of attempts. Queues in ``queues`` run up to their limit at once, in
    priority order, and a failure does not block them.

    A running worker deletes completed jobs older than ``job_retention`` every
    ``cleanup_interval`` (``None`` turns the cleanup off: keep them, or delete them yourself).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        scope: str = "default",
        poll_interval: float | timedelta = 60.0,
        concurrency: int = 10,
        queues: Mapping[str, int] | None = None,
        job_retention: float | timedelta = timedelta(days=7),
        cleanup_interval: float | timedelta | None = timedelta(minutes=5),
        lease_ttl: float | timedelta = 30.0,
        max_params_size: int = _core.DEFAULT_MAX_PARAMS_SIZE,
        stop_timeout: float | timedelta = 30.0,
        connect_timeout: float | timedelta = 5.0,
        wakeup_interval: float | timedelta = 0.05,
        worker_name: str | None = None,
    ) -> None:
        url = database_url or os.environ.get("FERROQ_DATABASE_URL") or DEFAULT_DATABASE_URL
        if not isinstance(url, str):
            raise ConfigurationError(f"database_url must be a string, got {url!r}")
        _name("scope", scope)
        concurrent: dict[str, int] = {}
        for queue, limit in dict(queues or {}).items():
            if not isinstance(queue, str) or isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(f"queues maps queue names to limits of at least 1, got {queue!r}: {limit!r}")
            concurrent[queue] = limit
        if isinstance(max_params_size, bool) or not isinstance(max_params_size, int) or max_params_size < 1:
            raise ConfigurationError(f"max_params_size must be a positive integer, got {max_params_size!r}")
        self.database_url = url
        self.scope = scope
        self.queues = concurrent
        self.concurrency = concurrency
        self.poll_interval = _seconds("poll_interval", poll_interval, ConfigurationError, allow_zero=False)
        self.job_retention = _seconds("job_retention", job_retention, ConfigurationError)
        self.cleanup_interval = (
            None if cleanup_interval is None else _seconds("cleanup_interval", cleanup_interval, ConfigurationError, allow_zero=False)
        )
        self.lease_ttl = _seconds("lease_ttl", lease_ttl, ConfigurationError, allow_zero=False)
        self.stop_timeout = _seconds("stop_timeout", stop_timeout, ConfigurationError)
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._check_concurrency(concurrency)
        self._client = _core.Client(
            url,
            scope,
            concurrent,
            max_params_size,
            _seconds("connect_timeout", connect_timeout, ConfigurationError, allow_zero=False),
            10,
            _seconds("wakeup_interval", wakeup_interval, ConfigurationError, allow_zero=False),
        )
        self._performers: dict[str, Performer] = {}
        self._worker: Any = None
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _check_concurrency(concurrency: Any) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer of at least 1, got {concurrency!r}")

    def __repr__(self) -> str:
        return f"<ferroq.App scope={self.scope!r} performers={sorted(self._performers)}>"

    # -- performers ---------------------------------------------------------------------------

    def performer(
        self,
        action: str | Callable[..., Any] | None = None,
        *,
        backoff: Callable[[Any], float] | None = None,
        on_failure: Callable[[Any, str], Any] | None = None,
    ) -> Any:
        """Register the function that performs jobs of ``action`` (sync or ``async def``).

        ``@app.performer`` alone uses the function's name as the action.
        ``backoff(job) -> seconds`` replaces the default delay after a failed attempt;
        ``on_failure(job, error)`` is called once when the job runs out of attempts.
        """

        def register(fn: Callable[..., Any], name: str | None) -> Callable[..., Any]:
            name = _name("action", name or fn.__name__)
            if not callable(fn):
                raise ConfigurationError(f"performer for {name!r} must be callable")
            self._performers[name] = Performer(name, fn, inspect.iscoroutinefunction(fn), backoff, on_failure)
            return fn

        if callable(action):
            return register(action, None)
        return lambda fn: register(fn, action)

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
        delay: float | timedelta | None = None,
        timeout: float | timedelta = 60.0,
        max_backoff: float | timedelta = 86_400.0,
        max_attempts: int = 20,
        priority: int = 0,
        connection: Any = None,
    ) -> Any:
        """Enqueue one job. With ``connection`` (a psycopg connection to the same PostgreSQL
        database, or a sqlite3 connection to the same file), the job is inserted in that
        connection's transaction and exists only if it commits."""
        spec = _job_spec(queue, action, params, scheduled_at, delay, timeout, max_backoff, max_attempts, priority)
        return self._insert([spec], connection)[0]

    def create_jobs(self, jobs: Iterable[Mapping[str, Any]], *, connection: Any = None) -> list[Any]:
        """Enqueue many jobs in one round trip. Each item takes ``create_job``'s arguments."""
        return self._insert(self._specs(jobs), connection)

    async def acreate_job(self, queue: str, action: str, params: Any = None, **options: Any) -> Any:
        """Awaitable ``create_job``."""
        spec = _job_spec(queue, action, params, **_only_job_options(options))
        return (await self._client.ainsert_jobs([spec]))[0]

    async def acreate_jobs(self, jobs: Iterable[Mapping[str, Any]]) -> list[Any]:
        """Awaitable ``create_jobs``."""
        return await self._client.ainsert_jobs(self._specs(jobs))

    @staticmethod
    def _specs(jobs: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        specs = []
        for index, item in enumerate(jobs):
            if not isinstance(item, Mapping):
                raise InvalidOptionError(f"job #{index} must be a mapping of create_job arguments, got {item!r}")
            unknown = set(item) - _JOB_OPTIONS
            if unknown:
                raise InvalidOptionError(f"job #{index} has unknown options: {sorted(unknown)}")
            if "queue" not in item or "action" not in item:
                raise InvalidOptionError(f"job #{index} needs a queue and an action")
            specs.append(_job_spec(**item))
        return specs

    def _insert(self, specs: list[tuple[Any, ...]], connection: Any) -> list[Any]:
        if connection is None:
            return self._client.insert_jobs(specs)
        sql, executions = self._client.external_insert(specs)
        rows = []
        cursor = connection.cursor()
        try:
            for params in executions:
                cursor.execute(sql, params)
                rows.extend(cursor.fetchall())
        finally:
            cursor.close()
        jobs = [_core.Client.job_from_row(tuple(_to_utc(v) for v in row)) for row in rows]
        return sorted(jobs, key=lambda job: job.sequence)

    # -- workers ------------------------------------------------------------------------------

    def _start_worker(self, drain: bool) -> tuple[Any, Executor]:
        self._check_concurrency(self.concurrency)
        executor = Executor(self._performers, self.concurrency)
        handle = self._client.start_worker(
            executor,
            self.concurrency,
            self.poll_interval,
            self.lease_ttl,
            self.cleanup_interval,
            self.job_retention,
            self.worker_name,
            drain,
        )
        executor.bind(handle)
        return handle, executor

    def start(self) -> None:
        """Start a worker on background threads. Jobs run until :meth:`stop`."""
        with self._lock:
            if self._worker is not None:
                raise ConfigurationError("this App's worker is already running")
            self._worker, self._executor = self._start_worker(drain=False)

    def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop claiming, let running jobs finish within ``timeout`` (default ``stop_timeout``),
        then interrupt the rest and put them back in their queue without using an attempt."""
        with self._lock:
            worker, executor = self._worker, self._executor
            self._worker = self._executor = None
        if worker is None:
            return
        seconds = self.stop_timeout if timeout is None else _seconds("timeout", timeout, ConfigurationError)
        try:
            worker.stop(seconds)
        finally:
            assert executor is not None
            executor.close()

    def close(self) -> None:
        """Stop the worker if one runs and close the connection pool. The App stays usable:
        a later call opens a new pool."""
        self.stop()
        self._client.close()

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
        installed = {}
        if threading.current_thread() is threading.main_thread():

            def request_stop(signum: int, frame: Any) -> None:
                stop_requested.set()
                # A second Ctrl-C interrupts the graceful stop.
                signal.signal(signal.SIGINT, signal.default_int_handler)

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
                worker.stop(self.stop_timeout)
            finally:
                executor.close()
        return int(worker.processed)

    def notify(self) -> None:
        """Wake this scope's workers, in this process and every other, to look for jobs now."""
        self._client.notify()

    # -- inspection and control ---------------------------------------------------------------

    def get_job(self, id: int) -> Any:
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
    ) -> list[Any]:
        """Jobs of this scope matching every filter given. ``search`` is a case-insensitive
        substring of the action, the params (as JSON text) or the error."""
        states = _states(state)
        return self._client.list_jobs(
            queue, action, states, search, order_by, bool(descending), _integer("limit", limit), _integer("offset", offset)
        )

    def paginate_jobs(self, page_size: int = 20, page_number: int = 1, **filters: Any) -> Page:
        """One page of :meth:`list_jobs` (pages count from 1) with the total number of matches."""
        page_size, page_number = _integer("page_size", page_size), _integer("page_number", page_number)
        if page_size < 1 or page_number < 1:
            raise InvalidOptionError("page_size and page_number must be at least 1")
        unknown = set(filters) - {"queue", "action", "state", "search", "order_by", "descending"}
        if unknown:
            raise InvalidOptionError(f"unknown filters: {sorted(unknown)}")
        data = self.list_jobs(limit=page_size, offset=(page_number - 1) * page_size, **filters)
        total = self._client.count_jobs(
            filters.get("queue"), filters.get("action"), _states(filters.get("state")), filters.get("search")
        )
        return Page(data=data, total=total, page_number=page_number, page_size=page_size)

    def retry_job(self, id: int) -> Any:
        """Make a waiting, failed or discarded job run again now (with at least one attempt left)."""
        return self._client.retry_job(_integer("id", id))

    def cancel_job(self, id: int) -> Any:
        """Discard a job that has not finished and is not running."""
        return self._client.cancel_job(_integer("id", id))


def _states(state: Any) -> list[str] | None:
    if state is None:
        return None
    if isinstance(state, str):
        return [str(state.value) if hasattr(state, "value") else state]
    return [str(s.value) if hasattr(s, "value") else str(s) for s in state]


def _only_job_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - (_JOB_OPTIONS - {"queue", "action", "params"})
    if unknown:
        raise InvalidOptionError(f"unknown job options: {sorted(unknown)}")
    return dict(options)
