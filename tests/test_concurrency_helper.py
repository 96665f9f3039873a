"""The race-test helper really runs workers at the same time, on PostgreSQL only.

Proof of overlap: each worker records its arrival in a table (committed, so every session
sees it) and then waits until all N workers have arrived. If the helper ran the workers one
after another, the first worker could never see the others arrive and would time out.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from django.db import connection

from tests import concurrency
from tests.concurrency import ProcessError, run_processes, run_threads

N = 4
TABLE = "mdt_rendezvous"


@pytest.fixture
def rendezvous(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (tag text, idx int, pid int, at timestamptz DEFAULT now())")
    yield f"mdt-conc-{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _meet(tag: str, index: int, n: int, timeout: float = 30.0) -> tuple[int, int, bool]:
    """Arrive, then wait for all n; return (index, own backend pid, whether all n were seen)."""
    with connection.cursor() as cursor:  # autocommit: the arrival is visible to the others at once
        cursor.execute(f"INSERT INTO {TABLE} (tag, idx, pid) VALUES (%s, %s, pg_backend_pid()) RETURNING pid",
                       [tag, index])
        pid = cursor.fetchone()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cursor.execute(f"SELECT count(*) FROM {TABLE} WHERE tag = %s", [tag])
            if cursor.fetchone()[0] >= n:
                return index, pid, True
            time.sleep(0.01)
    return index, pid, False


def test_threads_overlap_and_return_values_in_order(rendezvous):
    outcomes = run_threads(_meet, N, args=[(rendezvous, i, N) for i in range(N)])
    assert all(o.ok for o in outcomes), [o.trace for o in outcomes]
    assert [o.value[0] for o in outcomes] == list(range(N))  # results come back in worker order
    assert all(o.value[2] for o in outcomes), "workers did not all run at the same time"
    assert len({o.value[1] for o in outcomes}) == N  # one database session per worker


def test_processes_overlap_and_return_values_in_order(rendezvous):
    outcomes = run_processes(_meet, N, args=[(rendezvous, i, N) for i in range(N)])
    assert all(o.ok for o in outcomes), [o.trace for o in outcomes]
    assert [o.value[0] for o in outcomes] == list(range(N))
    assert all(o.value[2] for o in outcomes), "processes did not all run at the same time"
    assert len({o.value[1] for o in outcomes}) == N


def test_the_overlap_proof_fails_for_sequential_calls(rendezvous):
    """The rendezvous itself is sound: called one after another, nobody meets anybody."""
    results = [_meet(rendezvous, i, 2, timeout=0.3) for i in range(2)]
    assert results[0][2] is False


def _pid_or_fail(i: int):
    if i % 2:
        raise ValueError(f"worker {i} failed")
    return os.getpid()


@pytest.mark.django_db(transaction=True)
def test_threads_carry_exceptions_back():
    outcomes = run_threads(_pid_or_fail, N, args=[(i,) for i in range(N)])
    assert [o.ok for o in outcomes] == [True, False, True, False]
    assert isinstance(outcomes[1].error, ValueError) and "worker 1 failed" in str(outcomes[1].error)
    assert "ValueError" in outcomes[3].trace
    assert outcomes[0].value == os.getpid()  # threads share the test's process


@pytest.mark.django_db(transaction=True)
def test_processes_carry_exceptions_back():
    outcomes = run_processes(_pid_or_fail, N, args=[(i,) for i in range(N)])
    assert [o.ok for o in outcomes] == [True, False, True, False]
    assert isinstance(outcomes[1].error, ProcessError) and "ValueError: worker 1 failed" in str(outcomes[1].error)
    assert "ValueError" in outcomes[3].trace
    pids = {outcomes[0].value, outcomes[2].value}
    assert os.getpid() not in pids and len(pids) == 2  # really separate processes


@pytest.mark.parametrize("runner", [run_threads, run_processes])
def test_refuses_to_run_on_sqlite(monkeypatch, runner):
    called = []
    monkeypatch.setattr(concurrency.connection, "vendor", "sqlite")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL"):
        runner(lambda: called.append(1), 2)
    assert not called


class _OneShort:
    """A multiprocessing context whose barriers wait for one party more than the helper starts."""

    def __init__(self, ctx):
        self._ctx = ctx

    def Barrier(self, n):
        return self._ctx.Barrier(n + 1)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


@pytest.mark.django_db(transaction=True)
def test_a_broken_thread_barrier_fails_the_test_instead_of_running_unraced(monkeypatch):
    called = []
    real = concurrency.threading.Barrier
    monkeypatch.setattr(concurrency.threading, "Barrier", lambda n: real(n + 1))
    with pytest.raises(concurrency.BrokenBarrier, match="never met"):
        run_threads(lambda: called.append(1), 3, barrier_timeout=0.5)
    assert not called  # nobody ran the function one after another


@pytest.mark.django_db(transaction=True)
def test_a_broken_process_barrier_fails_the_test_instead_of_running_unraced(monkeypatch):
    real = concurrency.multiprocessing.get_context
    monkeypatch.setattr(concurrency.multiprocessing, "get_context", lambda method: _OneShort(real(method)))
    with pytest.raises(concurrency.BrokenBarrier, match="never met"):
        run_processes(os.getpid, 3, barrier_timeout=0.5, timeout=30)
