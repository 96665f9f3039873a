"""The whole fulfilment stack as real processes, for tests: web server, Celery worker, simulated merchant, broker.

- broker: RabbitMQ (amqp://guest:guest@127.0.0.1:5672//, as CI runs it) with a queue of this test's own, or
  this run's Redis broker when RabbitMQ does not answer (outside CI; in CI that is a failure);
- web: gunicorn (2 workers x 4 threads) on the test database, the merchant's callbacks land there;
- worker: a prefork Celery worker with 2 processes (tests.celery_worker.Worker);
- merchant: `manage.py simulated_merchant` on a free port with its own state file, calling the web server back.

The test process itself is switched to the same broker and queue (it sends tasks too: bulk sends, sweeps).
Use with `@pytest.mark.django_db(transaction=True)`: the processes only see committed rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.celery_worker import Worker, _database_url
from tests.servers import ROOT, free_port, serve

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
SECRET = "fulfilment-test-secret-9f8e7d6c"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def amqp_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def broker_url() -> str:
    if amqp_answers():
        return AMQP_URL
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("RabbitMQ does not answer on 127.0.0.1:5672 (CI must exercise it)")
    if not settings.CELERY_BROKER_URL:
        pytest.skip("needs a Celery broker")
    return settings.CELERY_BROKER_URL


@contextlib.contextmanager
def app_on_broker(url: str, queue: str):
    """Point this process's Celery app at `url`/`queue` (not eager) for the block, then put it back."""
    from miandan.celery import app

    keys = ("broker_read_url", "broker_write_url", "task_default_queue", "task_always_eager")
    old = {k: app.conf.get(k) for k in keys}
    # The read/write URLs, because Celery lets CELERY_BROKER_URL in the environment win over broker_url.
    app.conf.update(broker_read_url=url, broker_write_url=url, task_default_queue=queue, task_always_eager=False)
    app._after_fork()  # forget pooled connections to the old broker
    try:
        yield app
    finally:
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        app.conf.update(old)
        app._after_fork()


@contextlib.contextmanager
def broker_down():
    """This process's Celery app sends to a port nothing listens on (fast failure, no retries), then back."""
    from miandan.celery import app

    keys = ("broker_read_url", "broker_write_url", "broker_connection_timeout", "broker_connection_retry",
            "broker_connection_max_retries", "task_publish_retry")
    old = {k: app.conf.get(k) for k in keys}
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    app.conf.update(broker_read_url=dead, broker_write_url=dead, broker_connection_timeout=1,
                    broker_connection_retry=False, broker_connection_max_retries=0, task_publish_retry=False)
    app._after_fork()
    try:
        yield
    finally:
        app.conf.update(old)
        app._after_fork()


class MerchantProcess:
    """`manage.py simulated_merchant` in its own process group, with its state file kept across restarts."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = directory / "merchant.sqlite3"
        self.log_path = directory / "merchant.log"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.extra: list[str] = []

    def start(self, *args: str, **extra_env: str) -> MerchantProcess:
        assert self.proc is None
        self.extra = list(args) or self.extra
        env = {**self.env, **{k: str(v) for k, v in extra_env.items()}}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "simulated_merchant", "--url", self.url, "--state", str(self.state),
                 *self.extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"simulated merchant exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                self.health()
                return self
            time.sleep(0.1)
        pytest.fail(f"simulated merchant did not answer:\n{self.log_path.read_text()[-3000:]}")

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
            return json.loads(r.read())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def held_rows(self) -> dict[str, int]:
        import sqlite3

        with contextlib.closing(sqlite3.connect(str(self.state))) as db:
            return dict(db.execute("SELECT state, count(*) FROM held GROUP BY state").fetchall())


class Stack:
    def __init__(self, tmp_path: Path, settings_override) -> None:
        self.tmp = tmp_path
        self.queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-ff-{uuid.uuid4().hex[:8]}"
        self.broker = broker_url()
        self.exit = contextlib.ExitStack()
        self.worker = Worker(self.queue)
        self.merchant_port = free_port()
        settings_override.MIANDAN_MERCHANT_SECRET = SECRET
        settings_override.MIANDAN_MERCHANT_URL = f"http://127.0.0.1:{self.merchant_port}"
        settings_override.CELERY_TASK_ALWAYS_EAGER = False
        self.url = ""
        self.merchant: MerchantProcess | None = None

    def env(self, **extra) -> dict[str, str]:
        env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "60",
               "REDIS_URL": settings.REDIS_URL or "", "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
               "CELERY_BROKER_URL": self.broker, "CELERY_DEFAULT_QUEUE": self.queue, "CELERY_TASK_ALWAYS_EAGER": "0",
               "MIANDAN_MERCHANT_SECRET": SECRET, "MIANDAN_MERCHANT_URL": f"http://127.0.0.1:{self.merchant_port}",
               "LOG_LEVEL": "INFO", "RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0",
               # Only used on the Redis fallback broker: a killed worker's message comes back within the test.
               "CELERY_VISIBILITY_TIMEOUT": "10"}
        env.pop("MIANDAN_TEST_DB_NAME", None)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, *, merchant_args: tuple[str, ...] = (), merchant_env: dict | None = None,
              worker_env: dict | None = None, beat: bool = False, web_workers: int = 2) -> Stack:
        from django.db import connections

        connections.close_all()
        self.exit.enter_context(app_on_broker(self.broker, self.queue))
        self.url = self.exit.enter_context(serve(
            lambda port: [GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(web_workers), "-k", "gthread",
                          "--threads", "4", "--log-level", "warning"],
            self.env(), self.tmp / "web.log"))
        self.worker.start(beat=beat, **self.env(**(worker_env or {})))
        self.exit.callback(self.worker.stop)
        merchant_env = {"MIANDAN_MERCHANT_ACCEPT_SECONDS": "0.2-0.5", "MIANDAN_MERCHANT_DELIVER_SECONDS": "0.3-0.6",
                        **(merchant_env or {})}
        self.merchant = MerchantProcess(self.tmp, self.env(**merchant_env))
        self.merchant.port, self.merchant.url = self.merchant_port, f"http://127.0.0.1:{self.merchant_port}"
        self.merchant.start("--callback-url", self.url, *merchant_args)
        self.exit.callback(self.merchant.stop)
        return self

    def close(self) -> None:
        self.exit.close()
        with contextlib.suppress(Exception):
            self.worker.log_path.unlink()

    # --- driving it
    def place(self, token: str, text: str = "一杯伯牙绝弦") -> dict:
        from tests.orders.conftest import LAT, LNG

        r = httpx.post(f"{self.url}/api/v1/orders/chat", json={"text": text, "lat": LAT, "lng": LNG},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()

    def logs(self) -> str:
        parts = [f"--- worker\n{self.worker.log()[-4000:]}"]
        for name in ("web.log", "merchant.log"):
            path = self.tmp / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
