"""Per-process counters for benchmarks: SQL statements, HTTP requests, Celery tasks, CPU time.

Installed into gunicorn workers (`bench/instrument_gunicorn.py`, a gunicorn config file) and Celery pool
processes (`bench/celery_instrumented.py`) without touching the application: a Django execute wrapper on every
new database connection, a `request_finished` receiver, a `task_postrun` receiver. Each process rewrites
`$BENCH_COUNTERS_DIR/<role>-<pid>.json` every half second and at exit; the benchmark sums the files of a role
before and after a phase. CPU comes from os.times() of the process itself (user + system).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
from pathlib import Path

_COUNTERS: dict[str, itertools.count] = {}
_SEEN: dict[str, int] = {}


def _bump(name: str) -> None:
    next(_COUNTERS.setdefault(name, itertools.count(1)))  # next() on a count is atomic under the GIL


def _value(name: str) -> int:
    counter = _COUNTERS.get(name)
    if counter is None:
        return 0
    # itertools.count has no read; its repr is "count(N)" with N the next value to hand out.
    return int(repr(counter)[6:-1]) - 1


def _dump(path: Path) -> None:
    t = os.times()
    data = {"pid": os.getpid(), "sql": _value("sql"), "requests": _value("requests"), "tasks": _value("tasks"),
            "cpu_s": t.user + t.system, "ts": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def install(role: str) -> None:
    """Count this process's work under `role` (call once per process, after fork)."""
    directory = os.environ.get("BENCH_COUNTERS_DIR")
    if not directory:
        return
    from django.core.signals import request_finished
    from django.db.backends.signals import connection_created

    def wrapper(execute, sql, params, many, context):
        _bump("sql")
        return execute(sql, params, many, context)

    def on_connection(sender, connection, **kwargs):
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(on_connection, weak=False, dispatch_uid="bench-sql")
    request_finished.connect(lambda **kw: _bump("requests"), weak=False, dispatch_uid="bench-requests")
    try:
        from celery.signals import task_postrun

        task_postrun.connect(lambda **kw: _bump("tasks"), weak=False, dispatch_uid="bench-tasks")
    except ImportError:  # pragma: no cover
        pass
    path = Path(directory) / f"{role}-{os.getpid()}.json"

    def loop():
        while True:
            _dump(path)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True, name="bench-counters").start()
    atexit.register(_dump, path)


def totals(directory: str | Path, role: str) -> dict[str, float]:
    """Sum of every process file of `role` (processes that exited keep their last numbers)."""
    out = {"sql": 0.0, "requests": 0.0, "tasks": 0.0, "cpu_s": 0.0, "processes": 0.0}
    for path in Path(directory).glob(f"{role}-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in ("sql", "requests", "tasks", "cpu_s"):
            out[key] += data.get(key, 0)
        out["processes"] += 1
    return out
