"""The ``ferroq`` command: migrate, run a worker, list, retry and cancel jobs."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._app import App
from .errors import FerroqError

__all__ = ["main"]


def _load_app(target: str) -> App:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"ferroq: expected module:app, got {target!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = module
    for part in attribute.split("."):
        app = getattr(app, part)
    if not isinstance(app, App):
        raise SystemExit(f"ferroq: {target} is not a ferroq.App (got {type(app).__name__})")
    return app


def _app_from_args(args: argparse.Namespace) -> App:
    return App(args.database_url, scope=args.scope)


def _migrate(args: argparse.Namespace) -> int:
    applied = _app_from_args(args).migrate()
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return 0


def _worker(args: argparse.Namespace) -> int:
    app = _load_app(args.app)
    if args.concurrency is not None:
        app.concurrency = args.concurrency
    if args.queues is not None:
        app.only_queues = [queue.strip() for queue in args.queues.split(",") if queue.strip()]
    if args.migrate:
        app.migrate()
    served = "all queues" if app.only_queues is None else f"queues {app.only_queues}"
    print(
        f"ferroq worker {app.worker_name}: scope {app.scope!r}, {served}, performers {sorted(app._performers)}",
        flush=True,
    )
    app.run()
    return 0


def _jobs(args: argparse.Namespace) -> int:
    app = _app_from_args(args)
    jobs = app.list_jobs(queue=args.queue, action=args.action, state=args.state, search=args.search, limit=args.limit)
    print(f"{'id':>8}  {'state':<10} {'attempts':>8}  {'queue':<20} {'action':<20} error / why it waits")
    for job in jobs:
        error = (job.error or "").splitlines()[-1:] or [""]
        why = job.waiting_reason
        if job.state == "running" and job.cancel_requested_at is not None:
            why = f"cancel requested at {job.cancel_requested_at:%Y-%m-%d %H:%M:%S} UTC"
        detail = error[0][:60] if why is None else (f"{error[0][:60]} / {why}" if error[0] else why)
        print(
            f"{job.id:>8}  {job.state:<10} {job.attempts:>3}/{job.max_attempts:<4}  {job.queue:<20}"
            f" {job.action:<20} {detail}"
        )
    return 0


#: Exit status of ``stats --check`` when a blocking queue is held (0: none is; 1: an error).
EXIT_BLOCKED = 3

_STATE_COLUMNS = ("scheduled", "available", "running", "retryable", "completed", "failed", "discarded")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _stats(args: argparse.Namespace) -> int:
    app = _load_app(args.app) if getattr(args, "app", None) else _app_from_args(args)
    stats = app.stats(blocked_limit=args.limit)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        width = max([len("QUEUE"), *(len(q["queue"]) for q in stats["queues"])])
        header = "  ".join(f"{s.upper():>9}" for s in _STATE_COLUMNS)
        print(f"{'QUEUE':<{width}}  {'KIND':<10}  {header}  OLDEST AVAILABLE")
        for queue in stats["queues"]:
            counts = "  ".join(f"{queue['counts'][s]:>9}" for s in _STATE_COLUMNS)
            kind = "blocking" if queue["blocking"] else "concurrent"
            paused = "  (paused)" if queue["paused"] else ""
            print(f"{queue['queue']:<{width}}  {kind:<10}  {counts}  {_age(queue['oldest_available_age']):>16}{paused}")
        if not stats["queues"]:
            print("(no jobs)")
        blocked = stats["blocked"]
        if blocked:
            shown = f"{len(blocked)} of {stats['blocked_total']}"
            print(f"\nBLOCKED QUEUES ({shown})")
            width = max(len("QUEUE"), *(len(b["queue"]) for b in blocked))
            print(f"{'QUEUE':<{width}}  {'BEHIND':>6}  REASON")
            for b in blocked:
                print(f"{b['queue']:<{width}}  {b['behind']:>6}  {b['reason']}")
        else:
            print("\nno blocking queue is held")
        if stats["paused"]:
            print("\nPAUSED: " + ", ".join(f"{p['queue']} (since {p['paused_at']})" for p in stats["paused"]))
    return EXIT_BLOCKED if args.check and stats["blocked_total"] > 0 else 0


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def _duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d`` as seconds (argparse type)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 12h or 7d, got {text!r}")
    number, unit = match.groups()
    return float(number) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _pause(args: argparse.Namespace) -> int:
    app = _app_from_args(args)
    for queue in args.queues:
        app.pause_queue(queue)
        print(f"paused {queue}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    app = _app_from_args(args)
    for queue in args.queues:
        app.resume_queue(queue)
        print(f"resumed {queue}")
    return 0


_FILTER_ARGS = ("queue", "action", "state", "search", "older_than")


def _change(
    verb: str, one: Callable[[App, int], Any] | None, many: Callable[..., int]
) -> Callable[[argparse.Namespace], int]:
    """A command that changes the jobs named by id, or every job the filters match (at least
    one filter, or ``--all``: a bare ``ferroq delete`` must not purge a database by mistake)."""

    def run(args: argparse.Namespace) -> int:
        filters = {name: getattr(args, name) for name in _FILTER_ARGS if getattr(args, name) is not None}
        if args.ids and one is None:
            raise SystemExit(f"ferroq {verb}: takes filters (--state, --queue, ...), not job ids")
        if args.ids and (filters or args.all):
            raise SystemExit(f"ferroq {verb}: give job ids or filters, not both")
        if not args.ids and not filters and not args.all:
            raise SystemExit(f"ferroq {verb}: give job ids, or filters (--state, --queue, ...), or --all")
        app = _app_from_args(args)
        if args.ids and one is not None:
            for id in args.ids:
                job = one(app, id)
                if job.state == "running" and job.cancel_requested_at is not None:
                    print(f"job {job.id} is running: cancel requested, its worker ends it discarded")
                else:
                    print(f"job {job.id} is {job.state}")
            return 0
        if "state" in filters:
            filters["state"] = [s.strip() for s in filters["state"].split(",") if s.strip()]
        count = many(app, **filters)
        print(f"{verb}: {count} jobs")
        return 0

    return run


_retry = _change("retry", lambda app, id: app.retry_job(id), lambda app, **f: app.retry_jobs(**f))
_cancel = _change("cancel", lambda app, id: app.cancel_job(id), lambda app, **f: app.cancel_jobs(**f))
_delete = _change("delete", None, lambda app, **f: app.delete_jobs(**f))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferroq", description="ferroq job queue")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_database(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--database-url", default=None, help="default: $FERROQ_DATABASE_URL")
        sub.add_argument("--scope", default="default")
        return sub

    with_database(commands.add_parser("migrate", help="create or upgrade the tables")).set_defaults(run=_migrate)

    worker = commands.add_parser("worker", help="run a worker until SIGINT/SIGTERM")
    worker.add_argument("app", help="module:attribute of a ferroq.App")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument(
        "--queues",
        default=None,
        help="serve only these queues: comma-separated names or prefix* patterns (default: all)",
    )
    worker.add_argument("--migrate", action="store_true", help="migrate the schema before starting")
    worker.set_defaults(run=_worker)

    jobs = with_database(commands.add_parser("jobs", help="list jobs"))
    jobs.add_argument("--queue")
    jobs.add_argument("--action")
    jobs.add_argument("--state")
    jobs.add_argument("--search")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(run=_jobs)

    stats = with_database(
        commands.add_parser("stats", help="jobs per queue and state, and every blocked blocking queue with why")
    )
    stats.add_argument("--app", default=None, help="module:attribute of a ferroq.App: judge its performers too")
    stats.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    stats.add_argument("--limit", type=int, default=50, help="most blocked queues to list (default 50)")
    stats.add_argument(
        "--check", action="store_true", help=f"exit with status {EXIT_BLOCKED} when a blocking queue is held"
    )
    stats.set_defaults(run=_stats)

    pausing: tuple[tuple[str, Callable[[argparse.Namespace], int], str], ...] = (
        ("pause", _pause, "pause queues (names or prefix* patterns) across all workers: nothing new starts"),
        ("resume", _resume, "resume queues paused by the same names or patterns"),
    )
    for name, command, help_text in pausing:
        sub = with_database(commands.add_parser(name, help=help_text))
        sub.add_argument("queues", nargs="+", metavar="QUEUE")
        sub.set_defaults(run=command)

    changes = (
        ("retry", _retry, "run jobs again now: by id, or every failed/discarded/waiting job the filters match"),
        ("cancel", _cancel, "cancel jobs (running ones by their worker): by id, or every one the filters match"),
        ("delete", _delete, "delete finished jobs the filters match (e.g. --state failed --older-than 7d)"),
    )
    for name, run, help_text in changes:
        sub = with_database(commands.add_parser(name, help=help_text))
        sub.add_argument("ids", type=int, nargs="*", metavar="ID")
        sub.add_argument("--queue")
        sub.add_argument("--action")
        sub.add_argument("--state", help="comma-separated states")
        sub.add_argument("--search", help="case-insensitive text in the action, params or error")
        sub.add_argument("--older-than", type=_duration, help="e.g. 90s, 15m, 12h, 7d")
        sub.add_argument("--all", action="store_true", help="every job this change applies to")
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        result: Any = args.run(args)
    except FerroqError as exc:
        print(f"ferroq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
