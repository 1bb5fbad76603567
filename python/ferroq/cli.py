"""The ``ferroq`` command: migrate, run a worker, list, retry and cancel jobs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
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
#: stdout was closed before everything was written (``ferroq jobs | head``): 128 + SIGPIPE,
#: what a shell reports for a command that SIGPIPE ended.
EXIT_BROKEN_PIPE = 141

EPILOG = f"""\
The database and scope: --app module:app takes them from that App; otherwise
--database-url (default $FERROQ_DATABASE_URL, else sqlite:///ferroq.db) and --scope.
Which ones are used is printed on stderr; stdout carries only the command's output.

exit codes: {EXIT_OK} ok, {EXIT_ERROR} error (the message is on stderr), {EXIT_USAGE} usage,
{EXIT_BROKEN_PIPE} stdout closed early (ferroq jobs | head)"""


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
        detail = error[0][:60] if why is None else (f"{error[0][:60]} / {why}" if error[0] else why)
        print(
            f"{job.id:>8}  {job.state:<10} {job.attempts:>3}/{job.max_attempts:<4}  {job.queue:<20}"
            f" {job.action:<20} {_time(job.scheduled_at):<19}  {_time(job.next_attempt_at):<19}  {detail}"
        )
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    job = open_app(args).retry_job(args.id)
    print(f"job {job.id} is {job.state}")
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    job = open_app(args).cancel_job(args.id)
    print(f"job {job.id} is {job.state}")
    return EXIT_OK


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

    for name, run in (("retry", _retry), ("cancel", _cancel)):
        sub = add_database_arguments(commands.add_parser(name, help=f"{name} a job"))
        sub.add_argument("id", type=int)
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
