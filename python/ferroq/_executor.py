"""Runs performers for the Rust worker.

The worker hands over each claimed batch with one call to :meth:`Executor.submit`. Async
performers run as tasks on one asyncio loop thread: the batch crosses threads with a single
``call_soon_threadsafe``, and the outcomes of one loop iteration go back to Rust in a single
call. Sync performers run on a bounded thread pool. Timeouts cancel async tasks and interrupt
sync threads; an attempt is reported only once its performer has really returned, so a
blocking queue stays locked until then.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import threading
import time
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


_monotonic = time.monotonic

#: How often the asyncio thread looks for tasks past their timeout.
_ASYNC_TIMEOUT_SWEEP = 0.05

#: (kind, text, seconds) as WorkerHandle.report_many takes them, without the job.
Outcome = tuple[str, "str | None", "float | None"]


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
        # Loop-thread state: running tasks with their job, performer and deadline.
        self._tasks: dict[asyncio.Task[Any], tuple[Any, Performer, float]] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._sweeping = False
        self._pending: list[tuple[Any, str, str | None, float | None]] = []
        self._flush_scheduled = False
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
                error = f"no performer registered for action {job.action!r} (registered: {known})"
                self._handle.report_many([(job, "failed", error, None)])
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
        outcome: Outcome
        try:
            try:
                value = performer.fn(job)
            finally:
                fired = self._watchdog.disarm(key)
        except (JobTimeoutError, _ShutdownInterrupt):
            value = None
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is the attempt's outcome
            if fired is None:
                self._deliver(job, self._failure_now(job, performer, _describe(exc)))
                return
        if fired is _ShutdownInterrupt:
            outcome = ("released", None, None)
        elif fired is JobTimeoutError:
            outcome = self._failure_now(job, performer, _timeout_error(job))
        else:
            outcome = self._returned(job, performer, value)
        self._deliver(job, outcome)

    def _deliver(self, job: Any, outcome: Outcome) -> None:
        self._handle.report_many([(job, *outcome)])

    def _failure_now(self, job: Any, performer: Performer, error: str) -> Outcome:
        """A failure outcome, running an async on_failure hook to completion on this thread."""
        outcome, hook = self._failure(job, performer, error)
        if hook is None:
            return outcome
        try:
            asyncio.run(hook)
        except Exception as exc:  # noqa: BLE001
            return (outcome[0], f"{outcome[1]}\non_failure hook raised: {_describe(exc)}", outcome[2])
        return outcome

    # -- async performers ---------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            eager = getattr(asyncio, "eager_task_factory", None)
            if eager is not None:
                # 3.12+: a performer that never awaits finishes inside create_task.
                loop.set_task_factory(eager)
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
        now = loop.time()
        for job, performer in batch:
            try:
                task = loop.create_task(performer.fn(job))
            except BaseException as exc:  # noqa: BLE001 - the performer raised before returning a coroutine
                self._queue_outcome(job, self._failure_now(job, performer, _describe(exc)))
                continue
            if task.done():
                self._finish_task(task, job, performer)
            else:
                self._tasks[task] = (job, performer, now + job.timeout)
                task.add_done_callback(self._task_done)
        if self._tasks and not self._sweeping:
            self._sweeping = True
            loop.call_later(_ASYNC_TIMEOUT_SWEEP, self._sweep_timeouts)

    def _sweep_timeouts(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for task, (_job, _performer, deadline) in list(self._tasks.items()):
            if deadline <= now and task not in self._timed_out:
                self._timed_out.add(task)
                task.cancel()
        if self._tasks:
            loop.call_later(_ASYNC_TIMEOUT_SWEEP, self._sweep_timeouts)
        else:
            self._sweeping = False

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        job, performer, _deadline = self._tasks.pop(task)
        self._finish_task(task, job, performer)

    def _finish_task(self, task: asyncio.Task[Any], job: Any, performer: Performer) -> None:
        hook = None
        if task in self._timed_out:
            # Timed out, whether or not the performer swallowed the cancellation.
            self._timed_out.discard(task)
            outcome, hook = self._failure(job, performer, _timeout_error(job))
        elif task.cancelled():
            if self._stopping:
                outcome = ("released", None, None)
            else:
                outcome, hook = self._failure(job, performer, "cancelled: the performer's task was cancelled")
        elif task.exception() is not None:
            outcome, hook = self._failure(job, performer, _describe(task.exception()))  # type: ignore[arg-type]
        else:
            outcome = self._returned(job, performer, task.result())
        if hook is None:
            self._queue_outcome(job, outcome)
        else:
            asyncio.ensure_future(self._await_hook(job, outcome, hook), loop=self._loop)

    async def _await_hook(self, job: Any, outcome: Outcome, hook: Any) -> None:
        try:
            await hook
        except Exception as exc:  # noqa: BLE001 - a broken hook must never stop the worker
            outcome = (outcome[0], f"{outcome[1]}\non_failure hook raised: {_describe(exc)}", outcome[2])
        self._queue_outcome(job, outcome)

    def _queue_outcome(self, job: Any, outcome: Outcome) -> None:
        """Collect the outcomes of this loop iteration; they cross to Rust in one call."""
        self._pending.append((job, *outcome))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_outcomes)

    def _flush_outcomes(self) -> None:
        pending, self._pending = self._pending, []
        self._flush_scheduled = False
        self._handle.report_many(pending)

    # -- outcomes -----------------------------------------------------------------------------

    def _returned(self, job: Any, performer: Performer, value: Any) -> Outcome:
        """The outcome of a performer that returned ``value``."""
        if isinstance(value, Fail):
            return self._failure_now(job, performer, str(value.reason))
        if isinstance(value, Snooze):
            return ("snoozed", None, value.delay)
        if isinstance(value, Discard):
            return ("discarded", str(value.reason), None)
        if value is None:
            return ("completed", None, None)
        try:
            result = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            return self._failure_now(job, performer, f"the performer returned a value that is not JSON: {exc}")
        return ("completed", result, None)

    def _failure(self, job: Any, performer: Performer, error: str) -> tuple[Outcome, Any]:
        """A failed attempt: custom backoff, and the on_failure hook on the last attempt.
        Returns the outcome and, if the hook is a coroutine, the awaitable still to run."""
        backoff = None
        if performer.backoff is not None:
            try:
                backoff = float(performer.backoff(job))
            except Exception as exc:  # noqa: BLE001
                error += f"\nbackoff function raised, default backoff used: {_describe(exc)}"
        pending = None
        if performer.on_failure is not None and job.attempts >= job.max_attempts:
            try:
                result = performer.on_failure(job, error)
            except Exception as exc:  # noqa: BLE001 - a broken hook must never stop the worker
                error += f"\non_failure hook raised: {_describe(exc)}"
            else:
                if inspect.isawaitable(result):
                    pending = result
        return ("failed", error, backoff), pending
