"""The ``ferroq`` command: migrate, run a worker, list, retry and cancel jobs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
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


def _retry(args: argparse.Namespace) -> int:
    job = _app_from_args(args).retry_job(args.id)
    print(f"job {job.id} is {job.state}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job = _app_from_args(args).cancel_job(args.id)
    if job.state == "running":
        print(f"job {job.id} is running: cancel requested, its worker ends it discarded")
    else:
        print(f"job {job.id} is {job.state}")
    return 0


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

    for name, run in (("retry", _retry), ("cancel", _cancel)):
        sub = with_database(commands.add_parser(name, help=f"{name} a job"))
        sub.add_argument("id", type=int)
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
