"""One queue system, driven by run.py over stdin/stdout.

Runs inside the system's own virtualenv (`.venvs/<system>/bin/python agent.py <system>`).
run.py writes one JSON command per line on stdin; the agent answers each command with one
JSON line {"reply": <command>, ...} on stdout. Lines with an "event" key are sent on their
own (latency samples, first job, blocking-order checks). Logs go to stderr.

Every system adapter (systems/<name>.py) registers the same handler: an `async def` that
calls `on_job(params)` below and does nothing else unless the scenario needs a measurement.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

# -- the shared handler body ------------------------------------------------------------------

MODE = "drain"  # drain | io | latency | blocking
IO_SLEEP = 0.005  # the io scenario: each job awaits asyncio.sleep(IO_SLEEP)
_out_lock = threading.Lock()
_count_lock = threading.Lock()
_target = 0  # when set (init's "expect"), one "all_done" event once this many handlers returned
_first_seen = False
_running_keys: set[str] = set()
_last_index: dict[str, int] = {}
_overlaps = 0
_out_of_order = 0
_handled = 0


def emit(obj: dict[str, Any]) -> None:
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def get(params: Any, name: str) -> Any:
    if isinstance(params, dict):
        return params[name]
    if isinstance(params, (bytes, str)):
        return json.loads(params)[name]
    return getattr(params, name)


def _started(params: Any) -> None:
    global _first_seen
    now = time.time_ns()
    if not _first_seen:
        _first_seen = True
        emit({"event": "first", "ns": now})
    if MODE == "latency":
        emit({"event": "lat", "ns": now - get(params, "t"), "seq": get(params, "seq")})


def _finished() -> None:
    """Counts returned handlers. The SQLite scenarios stop their clock only once the database
    shows no job left *and* every handler has returned (huey deletes a task when it dequeues
    it, before running it, so its database alone cannot tell a finished job from a running one)."""
    global _handled
    with _count_lock:
        _handled += 1
        done = _handled == _target
    if done:
        emit({"event": "all_done", "ns": time.time_ns()})


async def on_job(params: Any) -> None:
    """The body of every system's no-op handler. `params` is whatever the system hands its
    handler (a dict, a dataclass, or pgqueuer's raw JSON bytes); it is only read when the
    scenario measures something."""
    global _overlaps, _out_of_order
    _started(params)
    if MODE == "io":
        await asyncio.sleep(IO_SLEEP)  # a realistic job: it waits on I/O
    elif MODE == "blocking":
        key, index = get(params, "k"), get(params, "i")
        if key in _running_keys:
            _overlaps += 1
        if index < _last_index.get(key, -1):
            _out_of_order += 1
        _last_index[key] = index
        _running_keys.add(key)
        await asyncio.sleep(0)  # give any other job of the same key a chance to overlap
        _running_keys.discard(key)
    _finished()


def on_job_sync(params: Any) -> None:
    """The same body for systems whose handlers are plain functions run by worker threads
    (huey: it refuses `async def` tasks). Only the drain and latency modes are used there."""
    _started(params)
    if MODE == "io":
        time.sleep(IO_SLEEP)
    _finished()


on_job.sync = on_job_sync  # type: ignore[attr-defined]


def job_params(mode: str, n: int, keys: int) -> list[dict[str, Any]]:
    if mode == "blocking":
        return [{"i": i, "k": f"k{i % keys}"} for i in range(n)]
    return [{"i": i} for i in range(n)]


# -- the command loop --------------------------------------------------------------------------


def load_system(name: str) -> Any:
    path = os.path.join(HERE, "systems", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_system_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def main() -> None:
    global MODE, _target
    system_name, dsn = sys.argv[1], sys.argv[2]
    module = load_system(system_name)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line)
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    system = None
    emit({"reply": "hello", "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        line = await commands.get()
        if line is None:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            result: dict[str, Any] = {}
            if op == "init":
                MODE = cmd.get("mode", "drain")
                _target = cmd.get("expect", 0)
                system = module.System(
                    dsn,
                    mode=MODE,
                    keys=cmd.get("keys", 0),
                    handler=on_job,
                    concurrency=cmd.get("concurrency") or module.DEFAULT_CONCURRENCY,
                )
                result["settings"] = system.settings()
                result["settings"]["concurrency"] = system.concurrency
            elif op == "setup":
                await system.setup()
            elif op == "open":
                await system.open()
            elif op == "enqueue":
                params = job_params(MODE, cmd["n"], cmd.get("keys", 0))
                batch = cmd["batch"]
                chunks = [params[i : i + batch] for i in range(0, len(params), batch)]
                # Timed: from plain param dicts to committed rows, i.e. building the
                # library's job objects (Oban's Job, awa's dataclass, ...) plus the call.
                t0 = time.perf_counter()
                for chunk in chunks:
                    await system.enqueue_batch(system.prepare_batch(chunk))
                result["seconds"] = time.perf_counter() - t0
                result["calls"] = len(chunks)
            elif op == "enqueue_single":
                # Timed: n calls of the single-job API in a loop; wall and process CPU time
                # (time.process_time(): every thread of this process, a Rust runtime's too).
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(cmd["n"]):
                    await system.enqueue_one({"i": i})
                result["seconds"] = time.perf_counter() - t0
                result["cpu_seconds"] = time.process_time() - c0
            elif op == "produce":
                await system.enqueue_one({"t": time.time_ns(), "seq": cmd["seq"]})
            elif op == "start_worker":
                await system.start_worker()
            elif op == "stop_worker":
                await system.stop_worker()
                result.update({"overlaps": _overlaps, "out_of_order": _out_of_order, "handled": _handled})
            elif op == "close":
                if system is not None:
                    await system.close()
            elif op == "exit":
                emit({"reply": op, "ok": True})
                break
            else:
                raise ValueError(f"unknown op {op!r}")
            emit({"reply": op, "ok": True, **result})
        except Exception as exc:  # report, keep serving: run.py decides
            traceback.print_exc()
            emit({"reply": op, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    sys.stdout.flush()
    # Some clients leave non-daemon threads behind; the process must end.
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
