"""A real Celery worker (prefork) on the real broker, for tests that need fulfilment end to end.

The worker is a subprocess in its own process group (so a test can SIGKILL it whole), pointed
at the TEST database (built from the live connection settings) and at this run's Redis prefix,
broker and queue. The test process itself is switched to send tasks to the broker.

Use with `@pytest.mark.django_db(transaction=True)`: the worker only sees committed rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).with_name("celery")


def _database_url() -> str:
    d = connection.settings_dict
    user = quote(d.get("USER") or "", safe="")
    password = quote(d.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{d.get('HOST') or '127.0.0.1'}:{d.get('PORT') or 5432}/{d['NAME']}"


class Worker:
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="celery-worker-", suffix=".log")[1])
        self.starts = 0

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": _database_url(),
            "CONN_MAX_AGE": "0",
            "REDIS_URL": settings.REDIS_URL or "",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL or "",
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "CELERY_DEFAULT_QUEUE": self.queue,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "DJANGO_SETTINGS_MODULE": "miandan.settings",
        })
        env.pop("MIANDAN_TEST_DB_NAME", None)
        env.update(extra or {})
        return env

    @property
    def name(self) -> str:
        """The node name of the running worker (for remote control: inspect().active())."""
        import socket

        return f"test-{os.getpid()}-{self.starts}@{socket.gethostname()}"

    def start(self, *, beat: bool = False, **extra: str) -> Worker:
        """Start the worker with `extra` environment; `beat` embeds the beat scheduler (-B) with its own file."""
        assert self.proc is None, "worker already running"
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n--- start #{self.starts} {extra}\n")
        log.flush()
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [str(CELERY), "-A", "miandan", "worker", "-Q", self.queue, "--pool=prefork", "-c", "2",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
             "-n", f"test-{os.getpid()}-{self.starts}@%h",
             *(["-B", "-s", str(self.log_path.with_suffix(f".beat{self.starts}"))] if beat else [])],
            cwd=ROOT, env=self.env({k: str(v) for k, v in extra.items()}), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log_path.read_text()[-3000:]}")
            with open(self.log_path) as f:
                f.seek(offset)
                if " ready." in f.read():
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready in 60 s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children): no chance to ack or clean up."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text()


def _purge(queue: str) -> None:
    from miandan.celery import app

    with app.connection_for_write() as conn:
        try:
            conn.default_channel.queue_purge(queue)
        except Exception:
            pass


@pytest.fixture
def celery_worker(transactional_db, settings):
    """Yields a started `Worker` factory-ish object: call `.start(**env)`; stopped at teardown."""
    from miandan.celery import app

    if not settings.CELERY_BROKER_URL:
        pytest.skip("needs a Celery broker (CELERY_BROKER_URL)")
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    settings.CELERY_TASK_ALWAYS_EAGER = False
    old = (app.conf.task_always_eager, app.conf.task_default_queue)
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    _purge(queue)
    worker = Worker(queue)
    try:
        yield worker
    finally:
        worker.stop()
        _purge(queue)
        app.conf.task_always_eager, app.conf.task_default_queue = old
        worker.log_path.unlink(missing_ok=True)
