"""Runs performers for the Rust worker.

Claimed jobs reach one asyncio loop thread directly: the worker signals a socket the loop
watches, and the loop takes every waiting job in one call. Async performers run as tasks on
that loop, and the outcomes of one loop iteration go back to Rust in a single call, which
also returns the jobs claimed ahead that take the freed slots (started at once). Sync
performers run on a bounded thread pool. Timeouts cancel async tasks and interrupt
sync threads; an attempt is reported only once its performer has really returned, so a
blocking queue stays locked until then. A running job an operator cancelled (``cancel_job``)
is interrupted the same way and reported discarded; its ``on_failure`` hook does not run (it
did not fail). A job cancelled before its performer started is not started.

Two outcomes need the database's word first, asked through the core (one query, only then): a
performer that completed its job on its own connection (``job.complete``) settled it only if
that transaction committed, which shows as the attempt no longer holding its lease; and an
``on_failure`` hook runs only while the failing attempt still holds its job, so a stale attempt
(its lease expired and handed on) never runs it a second time. A job claimed with no attempt
left (its last attempt's lease expired) runs only its hook.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._core import CANCELLED_WHILE_RUNNING, UNCOMMITTED_COMPLETION, Job, Outcome, WorkerHandle, snoozed_out
from ._outcomes import Discard, Fail, Snooze
from ._watchdog import CancelInterrupt, ShutdownInterrupt, Watchdog
from .errors import JobTimeoutError

__all__ = ["Executor", "Performer"]


@dataclass(frozen=True)
class Performer:
    """A registered performer function and its hooks."""

    action: str
    fn: Callable[..., Any]
    is_async: bool
    backoff: Callable[[Job], float] | None = None
    on_failure: Callable[[Job, str], Any] | None = None


#: How often the asyncio thread looks for tasks past their timeout.
_ASYNC_TIMEOUT_SWEEP = 0.05


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


async def _completion(awaitable: Awaitable[Any]) -> Any:
    """``awaitable`` as a coroutine, which ``asyncio.run`` needs."""
    return await awaitable


def _timeout_error(job: Job) -> str:
    return f"timeout: the job ran longer than its timeout of {job.timeout:g} s"


def _cancelled() -> Outcome:
    """The outcome of an attempt an operator cancelled: discarded, no failure hook."""
    return Outcome.discarded(CANCELLED_WHILE_RUNNING)


def _hook_due(job: Job, performer: Performer) -> bool:
    """Whether a failure of this attempt runs the performer's on_failure hook."""
    return performer.on_failure is not None and job.is_last_attempt


def _holds_lease(job: Job) -> bool:
    """Whether the attempt still holds its job. When the database cannot say, assume it does:
    what is written next is fenced by the lease anyway."""
    try:
        return job._holds_lease()
    except Exception:  # noqa: BLE001 - the outage is logged by the engine; the write is fenced
        return True


async def _aholds_lease(job: Job) -> bool:
    """Awaitable :func:`_holds_lease`."""
    try:
        return await job._aholds_lease()
    except Exception:  # noqa: BLE001
        return True


class Executor:
    """Runs the performers of one worker and reports each attempt's outcome to it."""

    def __init__(self, performers: dict[str, Performer], concurrency: int) -> None:
        self._performers = performers
        self._handle: WorkerHandle | None = None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ferroq-performer")
        self._watchdog = Watchdog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        # Loop-thread state: running tasks with their job, performer and deadline.
        self._tasks: dict[asyncio.Task[Any], tuple[Job, Performer, float]] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._cancelled_tasks: set[asyncio.Task[Any]] = set()
        # Jobs whose cancel the worker passed on, until their outcome is reported: a performer
        # not started yet when the cancel came is never started. Any thread.
        self._cancel_lock = threading.Lock()
        self._cancelled_jobs: set[tuple[int, int]] = set()
        self._sweeping = False
        self._pending: list[tuple[Job, Outcome]] = []
        self._flush_scheduled = False
        self._stopping = False

    # -- called by the Rust worker ------------------------------------------------------------

    def bind(self, handle: WorkerHandle) -> None:
        """Attach the worker handle: claimed jobs come from it, outcomes go back to it."""
        self._handle = handle
        loop = self._event_loop()
        # add_reader is not thread-safe: installed from the loop itself. Jobs claimed before
        # that leave the socket readable, so the first look finds them.
        loop.call_soon_threadsafe(loop.add_reader, handle.wakeup_fd, self._take_claimed)

    def _take_claimed(self) -> None:
        """The loop saw the wake-up socket readable: start every claimed job waiting."""
        assert self._handle is not None
        jobs = self._handle.take_claimed()
        if jobs:
            self._start(jobs, on_loop=True)

    def _start(self, jobs: list[Job], on_loop: bool) -> None:
        """Start ``jobs``: async ones on the loop (directly when ``on_loop``: the caller runs on
        the loop thread), sync ones on the pool."""
        while jobs:
            async_batch = []
            unknown = []
            for job in jobs:
                performer = self._performers.get(job.action)
                if performer is None:
                    known = ", ".join(sorted(self._performers)) or "none"
                    error = f"no performer registered for action {job.action!r} (registered: {known})"
                    unknown.append((job, Outcome.failed(error)))
                elif performer.is_async:
                    async_batch.append((job, performer))
                elif job._failure_pending:
                    self._pool.submit(self._fail_pending, job, performer)
                else:
                    self._pool.submit(self._run_sync, job, performer)
            if async_batch:
                if on_loop:
                    self._start_tasks(async_batch)
                else:
                    self._event_loop().call_soon_threadsafe(self._start_tasks, async_batch)
            # Reported in a loop, not by recursion: each report may hand back jobs to start.
            jobs = self._report_only(unknown) if unknown else []

    def cancel_all(self) -> None:
        """A stop ran out of time: interrupt what still runs; each is released, not failed.
        Jobs handed over that the loop has not taken yet are released without starting."""
        self._stopping = True
        # Taken before interrupting: a job the loop took after the interrupts would start and
        # run on, uninterrupted.
        if self._handle is not None:
            waiting = self._handle.take_claimed()
            if waiting:
                self._report_only([(job, Outcome.released()) for job in waiting])
        self._watchdog.interrupt_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_tasks)

    def cancel_jobs(self, attempts: list[tuple[int, int]]) -> None:
        """An operator cancelled these running attempts, ``(job id, lease token)``: interrupt
        their performers, as a timeout does. Called by the worker on a thread of its own."""
        ids = set(attempts)
        # Recorded before interrupting: a performer armed after this look finds its id.
        with self._cancel_lock:
            self._cancelled_jobs |= ids
        self._watchdog.interrupt_jobs(ids)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_job_tasks, ids)

    def _cancel_requested(self, job: Job) -> bool:
        with self._cancel_lock:
            return job._attempt in self._cancelled_jobs

    def _forget_cancel(self, job: Job) -> None:
        with self._cancel_lock:
            if job._attempt is not None:
                self._cancelled_jobs.discard(job._attempt)

    def close(self, keep_loop: bool = False) -> None:
        """Free the threads once the worker has stopped. ``keep_loop``: performers that could
        not be stopped still run, and an async one needs its loop to return and report."""
        self._watchdog.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None and self._handle is not None and not self._loop.is_closed():
            # The worker has stopped: it hands over nothing more.
            self._loop.call_soon_threadsafe(self._loop.remove_reader, self._handle.wakeup_fd)
        if self._loop is not None and not keep_loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                # Its self-pipe sockets stay open until the loop is closed.
                self._loop.close()

    # -- sync performers ----------------------------------------------------------------------

    def _run_sync(self, job: Job, performer: Performer) -> None:
        key = self._watchdog.arm(job.timeout, job._attempt)
        fired: type[BaseException] | None = None
        raised: BaseException | None = None
        value: Any = None
        cancelled_before_start = performer_returned = False
        try:
            try:
                # Looked at once armed (a cancel that comes later finds the performer armed),
                # and inside the try: that cancel's interrupt may land here already.
                cancelled_before_start = self._cancel_requested(job)
                if not cancelled_before_start:
                    value = performer.fn(job)
                    performer_returned = True
            finally:
                fired = self._watchdog.disarm(key)
        except (JobTimeoutError, ShutdownInterrupt, CancelInterrupt):
            pass
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is the attempt's outcome
            raised = exc
        if cancelled_before_start:
            self._deliver(job, _cancelled())
            return
        held = None
        if job._completion_applied:
            held = _holds_lease(job)
            if not held:
                self._deliver(job, Outcome.settled())
                return
        if fired is CancelInterrupt and not performer_returned:
            # A performer that returned before the interrupt reached it keeps its outcome.
            outcome = _cancelled()
        elif fired is ShutdownInterrupt:
            outcome = Outcome.released()
        elif fired is JobTimeoutError:
            outcome = self._failure_now(job, performer, _timeout_error(job), held)
        elif raised is not None:
            outcome = self._failure_now(job, performer, _describe(raised), held)
        else:
            returned = self._returned(job, value)
            outcome = self._failure_now(job, performer, returned, held) if isinstance(returned, str) else returned
        self._deliver(job, outcome)

    def _fail_pending(self, job: Job, performer: Performer) -> None:
        """A job claimed with no attempt left: its hook runs, its performer does not."""
        self._deliver(job, self._failure_now(job, performer, job.error or "no attempts left"))

    def _deliver(self, job: Job, outcome: Outcome) -> None:
        self._forget_cancel(job)
        self._report([(job, outcome)], on_loop=False)

    def _report(self, outcomes: list[tuple[Job, Outcome]], on_loop: bool) -> None:
        """Report outcomes, and start at once the jobs claimed ahead that take the freed
        slots: a slot is refilled without waiting for a claim."""
        ready = self._report_only(outcomes)
        if ready:
            self._start(ready, on_loop)

    def _report_only(self, outcomes: list[tuple[Job, Outcome]]) -> list[Job]:
        """Report outcomes; returns the jobs claimed ahead that take the freed slots."""
        assert self._handle is not None, "jobs come only once bound"
        return self._handle.report_many(outcomes)

    def _failure_now(self, job: Job, performer: Performer, error: str, held: bool | None = None) -> Outcome:
        """A failure outcome, running an async on_failure hook to completion on this thread.
        ``held``: whether the attempt still holds its job, if already known."""
        run_hook = _hook_due(job, performer) and (_holds_lease(job) if held is None else held)
        error, backoff, hook = self._failure(job, performer, error, run_hook)
        if hook is not None:
            try:
                asyncio.run(_completion(hook))
            except Exception as exc:  # noqa: BLE001
                error += f"\non_failure hook raised: {_describe(exc)}"
        return Outcome.failed(error, backoff)

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

    def _start_tasks(self, batch: list[tuple[Job, Performer]]) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for job, performer in batch:
            if self._cancel_requested(job):
                self._queue_outcome(job, _cancelled())
                continue
            if job._failure_pending:
                self._settle(job, performer, None, job.error or "no attempts left")
                continue
            try:
                task = loop.create_task(performer.fn(job))
            except BaseException as exc:  # noqa: BLE001 - the performer raised before returning a coroutine
                self._settle(job, performer, None, _describe(exc))
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

    def _cancel_job_tasks(self, attempts: set[tuple[int, int]]) -> None:
        for task, (job, _performer, _deadline) in list(self._tasks.items()):
            # A task already done keeps its outcome: cancel() is refused then.
            if job._attempt in attempts and task not in self._cancelled_tasks and task.cancel():
                self._cancelled_tasks.add(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        job, performer, _deadline = self._tasks.pop(task)
        self._finish_task(task, job, performer)

    def _finish_task(self, task: asyncio.Task[Any], job: Job, performer: Performer) -> None:
        outcome: Outcome | None = None
        error: str | None = None
        if task in self._cancelled_tasks:
            # Cancelled by an operator, whether or not the performer swallowed it.
            self._cancelled_tasks.discard(task)
            self._timed_out.discard(task)
            outcome = _cancelled()
        elif task in self._timed_out:
            # Timed out, whether or not the performer swallowed the cancellation.
            self._timed_out.discard(task)
            error = _timeout_error(job)
        elif task.cancelled():
            if self._stopping:
                outcome = Outcome.released()
            else:
                error = "cancelled: the performer's task was cancelled"
        elif (exc := task.exception()) is not None:
            error = _describe(exc)
        else:
            returned = self._returned(job, task.result())
            if isinstance(returned, str):
                error = returned
            else:
                outcome = returned
        self._settle(job, performer, outcome, error)

    def _settle(self, job: Job, performer: Performer, outcome: Outcome | None, error: str | None) -> None:
        """Report an async performer's ``outcome``, or its failure with ``error``. When the
        database must be asked first (see the module docstring), that runs as a task."""
        if job._completion_applied or (error is not None and _hook_due(job, performer)):
            asyncio.ensure_future(self._settle_after_check(job, performer, outcome, error), loop=self._loop)
            return
        if outcome is not None:
            self._queue_outcome(job, outcome)
            return
        assert error is not None
        error, backoff, _ = self._failure(job, performer, error, run_hook=False)
        self._queue_outcome(job, Outcome.failed(error, backoff))

    async def _settle_after_check(
        self, job: Job, performer: Performer, outcome: Outcome | None, error: str | None
    ) -> None:
        held = await _aholds_lease(job)
        if job._completion_applied and not held:
            self._queue_outcome(job, Outcome.settled())
            return
        if outcome is not None:
            self._queue_outcome(job, outcome)
            return
        assert error is not None
        error, backoff, hook = self._failure(job, performer, error, run_hook=held and _hook_due(job, performer))
        if hook is not None:
            try:
                await hook
            except Exception as exc:  # noqa: BLE001 - a broken hook must never stop the worker
                error += f"\non_failure hook raised: {_describe(exc)}"
        self._queue_outcome(job, Outcome.failed(error, backoff))

    def _queue_outcome(self, job: Job, outcome: Outcome) -> None:
        """Collect the outcomes of this loop iteration; they cross to Rust in one call."""
        self._forget_cancel(job)
        self._pending.append((job, outcome))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_outcomes)

    def _flush_outcomes(self) -> None:
        pending, self._pending = self._pending, []
        self._flush_scheduled = False
        self._report(pending, on_loop=True)

    # -- outcomes -----------------------------------------------------------------------------

    @staticmethod
    def _returned(job: Job, value: Any) -> Outcome | str:
        """The outcome of a performer that returned ``value``, or the error text when the attempt
        failed (the caller runs the failure hooks in its own way: sync thread or asyncio loop).
        Callers first make sure a completion the performer applied on its own connection did
        not commit (it would have settled the job)."""
        if job._completion_applied and not isinstance(value, (Fail, Snooze, Discard)):
            # Its completion rolled back, yet it returned as if done: retry, rather than
            # complete work that was undone.
            return UNCOMMITTED_COMPLETION
        if isinstance(value, Fail):
            return str(value.reason)
        if isinstance(value, Snooze):
            if value.count_attempt and job.is_last_attempt:
                # A counted snooze has used up the last attempt: a failure like any other,
                # so the performer's on_failure hook runs.
                return snoozed_out(job.max_attempts)
            return Outcome.snoozed(value.delay, bool(value.count_attempt))
        if isinstance(value, Discard):
            return Outcome.discarded(str(value.reason))
        if value is None:
            return Outcome.completed()
        try:
            result = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            return f"the performer returned a value that is not JSON: {exc}"
        return Outcome.completed(result)

    def _failure(
        self, job: Job, performer: Performer, error: str, run_hook: bool
    ) -> tuple[str, float | None, Awaitable[Any] | None]:
        """A failed attempt: custom backoff, and the on_failure hook if ``run_hook`` (the last
        attempt, still holding its job). Returns the error, the backoff and, if the hook is a
        coroutine, the awaitable still to run."""
        backoff = None
        if performer.backoff is not None:
            try:
                backoff = float(performer.backoff(job))
            except Exception as exc:  # noqa: BLE001
                error += f"\nbackoff function raised, default backoff used: {_describe(exc)}"
        pending = None
        if run_hook and performer.on_failure is not None:
            try:
                result = performer.on_failure(job, error)
            except Exception as exc:  # noqa: BLE001 - a broken hook must never stop the worker
                error += f"\non_failure hook raised: {_describe(exc)}"
            else:
                if inspect.isawaitable(result):
                    pending = result
        return error, backoff, pending
