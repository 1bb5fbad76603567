"""Runs performers for the Rust worker.

The worker hands over each claimed batch with one call to :meth:`Executor.submit`. Async
performers run as tasks on one asyncio loop thread (the batch crosses threads with a single
``call_soon_threadsafe``); sync performers run on a bounded thread pool. Timeouts cancel async
tasks and interrupt sync threads; an attempt is reported only once its performer has really
returned, so a blocking queue stays locked until then.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._outcomes import Discard, Fail, Snooze
from .errors import JobTimeoutError

__all__ = ["Executor", "Performer"]


@dataclass(frozen=True)
class Performer:
    """A registered performer function and its hooks."""

    action: str
    fn: Callable[..., Any]
    is_async: bool
    backoff: Callable[[Any], float] | None = None
    on_failure: Callable[[Any, str], Any] | None = None


class _ShutdownInterrupt(BaseException):
    """Raised in a sync performer's thread when a stop ran out of time; not a job failure."""


def _set_async_exc(thread_ident: int, exc_type: type[BaseException] | None) -> None:
    # None clears an exception that was sent but not yet raised.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), ctypes.py_object(exc_type) if exc_type else None)


class _Watchdog:
    """One thread that interrupts sync performers past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, list[Any]] = {}  # key -> [deadline, thread ident, fired exc type]
        self._next_key = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, timeout: float) -> int:
        with self._cond:
            self._next_key += 1
            key = self._next_key
            self._armed[key] = [_monotonic() + timeout, threading.get_ident(), None]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ferroq-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return key

    def disarm(self, key: int) -> type[BaseException] | None:
        """Stop watching; returns the exception type sent to the thread, if any was."""
        with self._cond:
            _deadline, ident, fired = self._armed.pop(key)
            if fired is not None:
                _set_async_exc(ident, None)
            return fired

    def interrupt_all(self) -> None:
        with self._cond:
            for entry in self._armed.values():
                if entry[2] is None:
                    entry[2] = _ShutdownInterrupt
                    _set_async_exc(entry[1], _ShutdownInterrupt)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = _monotonic()
                wait = None
                for entry in self._armed.values():
                    if entry[2] is not None:
                        continue
                    if entry[0] <= now:
                        entry[2] = JobTimeoutError
                        _set_async_exc(entry[1], JobTimeoutError)
                    else:
                        wait = entry[0] - now if wait is None else min(wait, entry[0] - now)
                self._cond.wait(wait)


def _monotonic() -> float:
    import time

    return time.monotonic()


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def _timeout_error(job: Any) -> str:
    return f"timeout: the job ran longer than its timeout of {job.timeout:g} s"


class Executor:
    """Runs the performers of one worker and reports each attempt's outcome to it."""

    def __init__(self, performers: dict[str, Performer], concurrency: int) -> None:
        self._performers = performers
        self._handle: Any = None
        self._bound = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ferroq-performer")
        self._watchdog = _Watchdog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._stopping = False

    # -- called by the Rust worker ------------------------------------------------------------

    def bind(self, handle: Any) -> None:
        """Attach the worker handle that outcomes are reported to."""
        self._handle = handle
        self._bound.set()

    def submit(self, jobs: list[Any]) -> None:
        """Start a claimed batch. Called once per batch from the dispatch thread."""
        self._bound.wait()
        async_batch = []
        for job in jobs:
            performer = self._performers.get(job.action)
            if performer is None:
                known = ", ".join(sorted(self._performers)) or "none"
                self._handle.report_failed(job, f"no performer registered for action {job.action!r} (registered: {known})", None
                )
            elif performer.is_async:
                async_batch.append((job, performer))
            else:
                self._pool.submit(self._run_sync, job, performer)
        if async_batch:
            self._event_loop().call_soon_threadsafe(self._start_tasks, async_batch)

    def cancel_all(self) -> None:
        """A stop ran out of time: interrupt what still runs; each is released, not failed."""
        self._stopping = True
        self._watchdog.interrupt_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_tasks)

    def close(self) -> None:
        """Free the threads once the worker has stopped."""
        self._watchdog.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._bound.clear()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)

    # -- sync performers ----------------------------------------------------------------------

    def _run_sync(self, job: Any, performer: Performer) -> None:
        key = self._watchdog.arm(job.timeout)
        fired: type[BaseException] | None = None
        try:
            try:
                value = performer.fn(job)
            finally:
                fired = self._watchdog.disarm(key)
        except (JobTimeoutError, _ShutdownInterrupt):
            value = None
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is the attempt's outcome
            if fired is None:
                self._fail(job, performer, _describe(exc))
                return
        if fired is _ShutdownInterrupt:
            self._handle.report_released(job)
        elif fired is JobTimeoutError:
            self._fail(job, performer, _timeout_error(job))
        else:
            self._settle(job, performer, value)

    # -- async performers ---------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop_thread = threading.Thread(target=run, name="ferroq-asyncio", daemon=True)
            self._loop_thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    def _start_tasks(self, batch: list[tuple[Any, Performer]]) -> None:
        loop = self._loop
        assert loop is not None
        for job, performer in batch:
            self._tasks[job.id] = loop.create_task(self._run_async(job, performer))

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    async def _run_async(self, job: Any, performer: Performer) -> None:
        try:
            inner = asyncio.ensure_future(performer.fn(job))
            try:
                done, _ = await asyncio.wait({inner}, timeout=job.timeout)
            except asyncio.CancelledError:
                inner.cancel()
                await asyncio.wait({inner})
                self._handle.report_released(job)
                return
            if not done:
                inner.cancel()
                # The queue stays locked until the performer has really stopped.
                await asyncio.wait({inner})
                await self._afail(job, performer, _timeout_error(job))
                return
            try:
                value = inner.result()
            except asyncio.CancelledError:
                if self._stopping:
                    self._handle.report_released(job)
                else:
                    await self._afail(job, performer, "cancelled: the performer's task was cancelled")
                return
            except BaseException as exc:  # noqa: BLE001
                await self._afail(job, performer, _describe(exc))
                return
            self._settle(job, performer, value)
        except BaseException as exc:  # noqa: BLE001 - never leave an attempt unreported
            self._handle.report_failed(job, _describe(exc), None)
        finally:
            self._tasks.pop(job.id, None)

    async def _afail(self, job: Any, performer: Performer, error: str) -> None:
        hook_result = self._fail(job, performer, error, defer_report=True)
        if inspect.isawaitable(hook_result[2]):
            try:
                await hook_result[2]
            except BaseException as exc:  # noqa: BLE001
                hook_result = (hook_result[0] + f"\non_failure hook raised: {_describe(exc)}", hook_result[1], None)
        self._handle.report_failed(job, hook_result[0], hook_result[1])

    # -- outcomes -----------------------------------------------------------------------------

    def _settle(self, job: Any, performer: Performer, value: Any) -> None:
        if isinstance(value, Fail):
            self._fail(job, performer, str(value.reason))
        elif isinstance(value, Snooze):
            self._handle.report_snoozed(job, value.delay)
        elif isinstance(value, Discard):
            self._handle.report_discarded(job, str(value.reason))
        elif value is None:
            self._handle.report_completed(job, None)
        else:
            try:
                result = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                self._fail(job, performer, f"the performer returned a value that is not JSON: {exc}")
                return
            self._handle.report_completed(job, result)

    def _fail(self, job: Any, performer: Performer, error: str, defer_report: bool = False) -> Any:
        """Report a failed attempt: custom backoff, and the on_failure hook on the last one."""
        backoff = None
        if performer.backoff is not None:
            try:
                backoff = float(performer.backoff(job))
            except Exception as exc:  # noqa: BLE001
                error += f"\nbackoff function raised, default backoff used: {_describe(exc)}"
        pending = None
        if performer.on_failure is not None and job.attempts >= job.max_attempts:
            try:
                pending = performer.on_failure(job, error)
            except Exception as exc:  # noqa: BLE001 - a broken hook must never stop the worker
                error += f"\non_failure hook raised: {_describe(exc)}"
            if inspect.isawaitable(pending) and not defer_report:
                # A coroutine hook from a sync performer: run it to completion on this thread.
                try:
                    asyncio.run(pending)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001
                    error += f"\non_failure hook raised: {_describe(exc)}"
                pending = None
        if defer_report:
            return (error, backoff, pending)
        self._handle.report_failed(job, error, backoff)
        return None
