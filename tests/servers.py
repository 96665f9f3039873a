"""Throwaway server processes for tests: a free port, a private redis-server, a runserver subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server on its own port, so a test can stop or flush it without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("own redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def serve(command: Callable[[int], list[str]], env: dict[str, str], log_path: Path,
          ready_timeout: float = 30) -> Iterator[str]:
    """Run `command(port)` (a web server) with `env`; yield its base URL once /healthz answers, then stop it.

    The server gets its own process group, so a pre-forking server (gunicorn) is stopped with its workers.
    """
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"server did not answer /healthz:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def runserver(env: dict[str, str], log_path: Path):
    """`manage.py runserver` as a context manager yielding its base URL (see `serve`)."""
    return serve(lambda port: [sys.executable, "manage.py", "runserver", "--noreload", "--skip-checks",
                               f"127.0.0.1:{port}"], env, log_path)


def deploy():
    """deploy/cluster.py (stdlib only): the same components `make cluster` starts."""
    from deploy import cluster

    return cluster


class OwnRedisCluster:
    """A Redis Cluster of `masters` redis-server processes (+ `replicas` each) on free ports, in `directory`."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server / redis-cli are not installed")
        self.procs = deploy().RedisClusterProcs(directory, masters=masters, replicas=replicas)

    @property
    def url(self) -> str:
        return self.procs.url

    def start(self) -> OwnRedisCluster:
        try:
            self.procs.start()
        except RuntimeError as exc:
            self.procs.stop()
            pytest.fail(str(exc))
        return self

    def stop(self) -> None:
        self.procs.stop()


class OwnPgBouncer:
    """PgBouncer in transaction pooling in front of the test PostgreSQL (see deploy/cluster.py)."""

    def __init__(self, directory: Path, pool_size: int = 20) -> None:
        try:
            deploy().find_binary("pgbouncer")
        except RuntimeError as exc:
            pytest.fail(str(exc))
        self.proc = deploy().PgBouncerProc(directory, pool_size=pool_size)

    @property
    def port(self) -> int:
        return self.proc.port

    def start(self) -> OwnPgBouncer:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()
