"""What a fault scenario measures, from its ledger and ferroq's own view of the jobs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .ledger import Ledger


@dataclass
class Verdict:
    """The figures every fault scenario reports and asserts on."""

    jobs: int
    #: Jobs the ledger never saw finish, or that ferroq does not show completed.
    lost: list[int] = field(default_factory=list)
    #: Runs of one job that intersected in time (two performers on one job at once).
    same_job_overlaps: list[tuple] = field(default_factory=list)
    #: Runs of two jobs of one blocking queue that intersected in time.
    queue_overlaps: list[tuple] = field(default_factory=list)
    #: Completed jobs whose stored result is not from the attempt that held the job last: an
    #: outcome written by an attempt that had lost its lease. The performers of
    #: ``tests/apps`` return their pid, which names the attempt's process.
    stale_accepted: list[int] = field(default_factory=list)
    #: Jobs run more than once (allowed: at least once), for the record.
    reruns: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "lost": len(self.lost),
            "same_job_overlaps": len(self.same_job_overlaps),
            "queue_overlaps": len(self.queue_overlaps),
            "stale_accepted": len(self.stale_accepted),
            "reruns": self.reruns,
        }

    def assert_clean(self, blocking: bool = True) -> None:
        assert not self.lost, f"{len(self.lost)} jobs lost: {self.lost[:20]}"
        assert not self.same_job_overlaps, f"one job ran twice at once: {self.same_job_overlaps[:10]}"
        assert not self.stale_accepted, f"outcomes of attempts that had lost their job: {self.stale_accepted[:10]}"
        if blocking:
            assert not self.queue_overlaps, f"blocking queues ran two jobs at once: {self.queue_overlaps[:10]}"

    def __repr__(self) -> str:  # pragma: no cover - shown in failures
        return f"Verdict({asdict(self)})"


def judge(ledger: Ledger, app, job_ids: Iterable[int], outcome_grace: float = 10.0) -> Verdict:
    """Compare what the ledger saw with what ferroq says for ``job_ids``; a job ferroq does not
    show completed within ``outcome_grace`` seconds is lost."""
    ids = list(job_ids)
    finished = ledger.finished_jobs()
    jobs = {i: app.get_job(i) for i in ids}
    # A performer writes its ledger finish before its worker writes the outcome: give the
    # outcomes in flight a moment.
    settle_by = time.monotonic() + outcome_grace
    while True:
        not_completed = [i for i, job in jobs.items() if job is None or job.state != "completed"]
        if not not_completed or time.monotonic() > settle_by:
            break
        time.sleep(0.1)
        jobs.update({i: app.get_job(i) for i in not_completed})
    last_runner: dict[int, int] = {}
    for start in ledger.starts():  # in time order: the last one wins
        last_runner[start["job_id"]] = start["pid"]
    stale = [
        i
        for i, job in jobs.items()
        if job is not None
        and job.state == "completed"
        and isinstance(job.result, dict)
        and "pid" in job.result
        and job.result["pid"] != last_runner.get(i)
    ]
    starts = ledger.db.rows("SELECT job_id, count(*) AS runs FROM ledger WHERE event = 'start' GROUP BY job_id")
    return Verdict(
        jobs=len(ids),
        lost=sorted({i for i in ids if i not in finished} | set(not_completed)),
        same_job_overlaps=ledger.same_job_overlaps(),
        queue_overlaps=ledger.overlaps(),
        stale_accepted=stale,
        reruns=sum(r["runs"] - 1 for r in starts),
    )


def finished_count(ledger: Ledger) -> int:
    return ledger.db.scalar("SELECT count(DISTINCT job_id) FROM ledger WHERE event = 'finish'")


def wait_for_finished(ledger: Ledger, count: int, timeout: float, describe: Callable[[], str] = str) -> float:
    """Wait until ``count`` distinct jobs finished in the ledger; returns the seconds taken."""
    began = time.monotonic()
    deadline = began + timeout
    while (done := finished_count(ledger)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {count} jobs finished within {timeout} s\n{describe()}")
        time.sleep(0.1)
    return time.monotonic() - began


def first_start_after(ledger: Ledger, moment) -> Any:
    """The database time of the first run that started after ``moment`` (a datetime)."""
    rows = [r for r in ledger.starts() if r["at"] > moment]
    return rows[0]["at"] if rows else None


def timed(call: Callable[[], Any]) -> tuple[float, Any, BaseException | None]:
    """``(seconds, result, exception)`` of one call."""
    began = time.monotonic()
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - the caller asserts on which
        return time.monotonic() - began, None, exc
    return time.monotonic() - began, result, None
