"""The shape of :meth:`ferroq.App.stats` (built in ``rust/stats.rs``; these types only name
its keys for type checkers)."""

from __future__ import annotations

from typing import TypedDict


class QueueStats(TypedDict):
    queue: str
    blocking: bool
    #: Jobs per state; every state is present (zero where none).
    counts: dict[str, int]
    #: Seconds since the available job claimable longest ago became so; None when none is.
    oldest_available_age: float | None
    #: Paused by its name or a pattern (see ``paused``).
    paused: bool


class Pause(TypedDict):
    #: A queue name, or a ``prefix*`` pattern.
    queue: str
    #: RFC 3339, on the database clock.
    paused_at: str


class BlockedQueue(TypedDict):
    queue: str
    head_id: int
    action: str
    state: str
    #: "paused", "retrying", "scheduled", "running" or "no_performer".
    cause: str
    reason: str
    #: RFC 3339: when the head may run again (retrying, scheduled).
    until: str | None
    #: RFC 3339: since when the head runs (running).
    since: str | None
    #: Unfinished jobs waiting behind the head.
    behind: int


class Stats(TypedDict):
    scope: str
    queues: list[QueueStats]
    #: At most the limit asked for, by queue name.
    blocked: list[BlockedQueue]
    #: How many blocking queues are held in all.
    blocked_total: int
    #: The pauses in force.
    paused: list[Pause]
