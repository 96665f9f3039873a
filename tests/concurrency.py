"""Run one function from many threads or processes at once, against PostgreSQL.

Every worker waits on a barrier and then calls the function, so the calls really overlap.
Results come back in worker order as `Outcome(value=...)` or `Outcome(error=...)`.
Tests that use these helpers must be `django_db(transaction=True)`: each worker opens its
own connection and commits for real. On SQLite they fail on purpose (SQLite serialises
writers, so a race test there would prove nothing).
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection, connections


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    trace: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.fail("concurrency tests need PostgreSQL (set DATABASE_URL); SQLite would prove nothing")


def _call(fn: Callable, args: tuple) -> Outcome:
    try:
        return Outcome(value=fn(*args))
    except BaseException as exc:
        return Outcome(error=exc, trace=traceback.format_exc())
    finally:
        connections.close_all()


def run_threads(fn: Callable, n: int, args: Sequence[tuple] | None = None, timeout: float = 120,
                barrier_timeout: float | None = None) -> list[Outcome]:
    """Call fn(*args[i]) from n threads released together by a barrier (BrokenBarrier if they never all meet)."""
    require_postgres()
    args = list(args) if args is not None else [()] * n
    assert len(args) == n
    barrier = threading.Barrier(n)
    results: list[Outcome | None] = [None] * n
    broken: list[int] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=barrier_timeout or timeout)
        except threading.BrokenBarrierError:
            # Not everyone arrived: the calls would not overlap, so the race was never run. Say so.
            broken.append(i)
            connections.close_all()
            return
        results[i] = _call(fn, args[i])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if broken:
        raise BrokenBarrier(f"{len(broken)} of {n} worker thread(s) never met at the barrier: the calls did not overlap")
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        pytest.fail(f"{len(missing)} worker thread(s) did not finish within {timeout}s")
    return results  # type: ignore[return-value]


class BrokenBarrier(AssertionError):
    """The workers never all met: whatever they did, it was not a race."""


def _process_main(fn, arg, barrier, queue, index, timeout):
    connections.close_all()  # never share the parent's socket
    try:
        barrier.wait(timeout=timeout)
    except threading.BrokenBarrierError:
        queue.put((index, None, _BROKEN, ""))
        return
    out = _call(fn, arg)
    # Exceptions may not pickle; send their repr and type name.
    if out.error is not None:
        queue.put((index, None, f"{type(out.error).__name__}: {out.error}", out.trace))
    else:
        queue.put((index, out.value, None, ""))


_BROKEN = "\0broken-barrier"


class ProcessError(Exception):
    """An exception raised in a child process, carried back as text."""


def run_processes(fn: Callable, n: int, args: Sequence[tuple] | None = None, timeout: float = 180,
                  barrier_timeout: float = 120) -> list[Outcome]:
    """Call fn(*args[i]) in n forked processes released together. fn and its result must pickle."""
    require_postgres()
    args = list(args) if args is not None else [()] * n
    assert len(args) == n
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    connections.close_all()
    procs = [ctx.Process(target=_process_main, args=(fn, args[i], barrier, queue, i, barrier_timeout)) for i in range(n)]
    for p in procs:
        p.start()
    results: list[Outcome | None] = [None] * n
    broken = 0
    for _ in range(n):
        index, value, error, trace = queue.get(timeout=timeout)
        if error == _BROKEN:
            broken += 1
            continue
        results[index] = Outcome(value=value, error=ProcessError(error) if error else None, trace=trace)
    for p in procs:
        p.join(10)
    if broken:
        raise BrokenBarrier(f"{broken} of {n} worker process(es) never met at the barrier: the calls did not overlap")
    return results  # type: ignore[return-value]
