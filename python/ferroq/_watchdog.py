"""Interrupting sync performers: one thread raises an exception inside a performer's thread
once its job ran past its timeout, when a stop ran out of time, or when an operator cancelled
the running job."""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

from .errors import JobTimeoutError

__all__ = ["CancelInterrupt", "ShutdownInterrupt", "Watchdog"]

_monotonic = time.monotonic


class ShutdownInterrupt(BaseException):
    """Raised in a sync performer's thread when a stop ran out of time; not a job failure."""


class CancelInterrupt(BaseException):
    """Raised in a sync performer's thread when its running job was cancelled (``cancel_job``);
    the job ends discarded, not failed."""


def _set_async_exc(thread_ident: int, exc_type: type[BaseException] | None) -> None:
    # None clears an exception that was sent but not yet raised.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_ident), ctypes.py_object(exc_type) if exc_type else None
    )


class Watchdog:
    """One thread that interrupts sync performers past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # key -> [deadline, thread ident, fired exc type, attempt (job id, lease token)]
        self._armed: dict[int, list[Any]] = {}
        self._next_key = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, timeout: float, attempt: tuple[int, int] | None = None) -> int:
        with self._cond:
            self._next_key += 1
            key = self._next_key
            self._armed[key] = [_monotonic() + timeout, threading.get_ident(), None, attempt]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ferroq-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return key

    def disarm(self, key: int) -> type[BaseException] | None:
        """Stop watching; returns the exception type sent to the thread, if any was."""
        with self._cond:
            _deadline, ident, fired, _job_id = self._armed.pop(key)
            sent: type[BaseException] | None = fired
            if fired is not None:
                _set_async_exc(ident, None)
            return sent

    def interrupt_all(self) -> None:
        with self._cond:
            for entry in self._armed.values():
                if entry[2] is None:
                    entry[2] = ShutdownInterrupt
                    _set_async_exc(entry[1], ShutdownInterrupt)

    def interrupt_jobs(self, attempts: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Interrupt the performers of these attempts; returns those found running here."""
        found = set()
        with self._cond:
            for entry in self._armed.values():
                if entry[3] in attempts:
                    found.add(entry[3])
                    if entry[2] is None:
                        entry[2] = CancelInterrupt
                        _set_async_exc(entry[1], CancelInterrupt)
        return found

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
