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
from datetime import datetime
from typing import Any

from . import _core
from ._app import App
from .errors import FerroqError

__all__ = ["main"]

#: Exit codes scripts can test (also in ``ferroq --help`` and the README).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own
#: ``stats --check`` found a blocking queue held by its head.
EXIT_BLOCKED = 3
#: stdout was closed before everything was written (``ferroq jobs | head``): 128 + SIGPIPE,
#: what a shell reports for a command that SIGPIPE ended.
EXIT_BROKEN_PIPE = 141

EPILOG = f"""\
The database and scope: --app module:app takes them from that App; otherwise
--database-url (default $FERROQ_DATABASE_URL, else sqlite:///ferroq.db) and --scope.
Which ones are used is printed on stderr; stdout carries only the command's output.

exit codes: {EXIT_OK} ok, {EXIT_ERROR} error (the message is on stderr), {EXIT_USAGE} usage,
{EXIT_BLOCKED} stats --check found a held blocking queue, {EXIT_BROKEN_PIPE} stdout closed early
(ferroq jobs | head)"""


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


def add_database_arguments(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--app``, ``--database-url`` and ``--scope``: what :func:`open_app` reads."""
    sub.add_argument("--app", default=None, help="module:attribute of a ferroq.App: its database and scope")
    sub.add_argument("--database-url", default=None, help="default: $FERROQ_DATABASE_URL, else sqlite:///ferroq.db")
    sub.add_argument("--scope", default=None, help="default: 'default'")
    return sub


def open_app(args: argparse.Namespace, *, create: bool = False) -> App:
    """The App the arguments name (see :func:`add_database_arguments`), after saying on stderr
    which database and scope it uses. Unless ``create``, a database that does not exist yet
    (a SQLite file) raises DatabaseError instead of being created empty."""
    if args.app is not None:
        if args.database_url is not None or args.scope is not None:
            raise SystemExit("ferroq: --app gives the database and scope; leave out --database-url and --scope")
        app = _load_app(args.app)
    else:
        app = App(args.database_url, scope=args.scope)
    print(f"ferroq: database {_core.redacted_url(app.database_url)}, scope {app.scope!r}", file=sys.stderr)
    if not create:
        app._client.check_database_exists()
    return app


def _migrate(args: argparse.Namespace) -> int:
    applied = open_app(args, create=True).migrate()
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    logging.getLogger("ferroq").setLevel(args.log_level)
    app = _load_app(args.app)
    if args.concurrency is not None:
        app.concurrency = args.concurrency
    if args.queues is not None:
        app.only_queues = [queue.strip() for queue in args.queues.split(",") if queue.strip()]
    if args.migrate:
        app.migrate()
    # The worker says what it serves, and then what it does, on the "ferroq" logger.
    app.run()
    return EXIT_OK


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _jobs(args: argparse.Namespace) -> int:
    app = open_app(args)
    jobs = app.list_jobs(queue=args.queue, action=args.action, state=args.state, search=args.search, limit=args.limit)
    print(
        f"{'id':>8}  {'state':<10} {'attempts':>8}  {'queue':<20} {'action':<20}"
        f" {'scheduled_at':<19}  {'next_attempt_at':<19}  error / why it waits"
    )
    for job in jobs:
        error = (job.error or "").splitlines()[-1:] or [""]
        why = job.waiting_reason
        if job.state == "running" and job.cancel_requested_at is not None:
            why = f"cancel requested at {job.cancel_requested_at:%Y-%m-%d %H:%M:%S} UTC"
        detail = error[0][:60] if why is None else (f"{error[0][:60]} / {why}" if error[0] else why)
        print(
            f"{job.id:>8}  {job.state:<10} {job.attempts:>3}/{job.max_attempts:<4}  {job.queue:<20}"
            f" {job.action:<20} {_time(job.scheduled_at):<19}  {_time(job.next_attempt_at):<19}  {detail}"
        )
    return EXIT_OK


_STATE_COLUMNS = ("scheduled", "available", "running", "retryable", "completed", "failed", "discarded")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _stats(args: argparse.Namespace) -> int:
    app = open_app(args)
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
    app = open_app(args)
    for queue in args.queues:
        app.pause_queue(queue)
        print(f"paused {queue}")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    app = open_app(args)
    for queue in args.queues:
        app.resume_queue(queue)
        print(f"resumed {queue}")
    return EXIT_OK


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
        app = open_app(args)
        if args.ids and one is not None:
            for id in args.ids:
                job = one(app, id)
                if job.state == "running" and job.cancel_requested_at is not None:
                    print(f"job {job.id} is running: cancel requested, its worker ends it discarded")
                else:
                    print(f"job {job.id} is {job.state}")
            return EXIT_OK
        if "state" in filters:
            filters["state"] = [s.strip() for s in filters["state"].split(",") if s.strip()]
        count = many(app, **filters)
        print(f"{verb}: {count} jobs")
        return EXIT_OK

    return run


_retry = _change("retry", lambda app, id: app.retry_job(id), lambda app, **f: app.retry_jobs(**f))
_cancel = _change("cancel", lambda app, id: app.cancel_job(id), lambda app, **f: app.cancel_jobs(**f))
_delete = _change("delete", None, lambda app, **f: app.delete_jobs(**f))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferroq",
        description="ferroq job queue",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ferroq {_core.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    add_database_arguments(commands.add_parser("migrate", help="create or upgrade the tables")).set_defaults(
        run=_migrate
    )

    worker = commands.add_parser("worker", help="run a worker until SIGINT/SIGTERM")
    worker.add_argument("app", help="module:attribute of a ferroq.App")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument(
        "--queues",
        default=None,
        help="serve only these queues: comma-separated names or prefix* patterns (default: all)",
    )
    worker.add_argument("--migrate", action="store_true", help="migrate the schema before starting")
    worker.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="of the 'ferroq' logger: DEBUG adds a line per completed job (default: INFO)",
    )
    worker.set_defaults(run=_worker)

    jobs = add_database_arguments(commands.add_parser("jobs", help="list jobs"))
    jobs.add_argument("--queue")
    jobs.add_argument("--action")
    jobs.add_argument("--state")
    jobs.add_argument("--search")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(run=_jobs)

    stats = add_database_arguments(
        commands.add_parser("stats", help="jobs per queue and state, and every blocked blocking queue with why")
    )
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
        sub = add_database_arguments(commands.add_parser(name, help=help_text))
        sub.add_argument("queues", nargs="+", metavar="QUEUE")
        sub.set_defaults(run=command)

    changes = (
        ("retry", _retry, "run jobs again now: by id, or every failed/discarded/waiting job the filters match"),
        ("cancel", _cancel, "cancel jobs (running ones by their worker): by id, or every one the filters match"),
        ("delete", _delete, "delete finished jobs the filters match (e.g. --state failed --older-than 7d)"),
    )
    for name, run, help_text in changes:
        sub = add_database_arguments(commands.add_parser(name, help=help_text))
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
        # Inside the try: a reader that went away (`| head`) shows up at this flush.
        sys.stdout.flush()
    except BrokenPipeError:
        # As Python's documentation advises: point stdout at devnull so that the flush at
        # exit does not fail again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except FerroqError as exc:
        print(f"ferroq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return int(result or EXIT_OK)


if __name__ == "__main__":
    raise SystemExit(main())
